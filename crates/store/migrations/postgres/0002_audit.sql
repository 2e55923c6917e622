-- The audit trail (PostgreSQL). One hash chain per tenant (audit_events) and one for the
-- platform (platform_audit_events). Events and checkpoints are append-only: the serving
-- role is granted INSERT and SELECT only, and triggers abort UPDATE, DELETE and
-- TRUNCATE whatever the role. Tenant tables carry row-level security. Times are
-- microseconds since the Unix epoch (the precision the chain hashes), so filters compare
-- integers on both backends.

CREATE TABLE audit_events (
    tenant_id          uuid NOT NULL REFERENCES tenants (id),
    seq                bigint NOT NULL CHECK (seq >= 1),
    time_us            bigint NOT NULL,
    actor_kind         text NOT NULL,
    actor_id           text NOT NULL,
    actor_role         text NOT NULL,
    source_ip          text NOT NULL,
    source_user_agent  text NOT NULL,
    source_device      text NOT NULL,
    action             text NOT NULL,
    resource_type      text NOT NULL,
    resource_id        text NOT NULL,
    fields             text NOT NULL,
    outcome            text NOT NULL,
    reason             text,
    request_id         text NOT NULL,
    before_json        text,
    after_json         text,
    prev_hash          bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash               bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_time ON audit_events (tenant_id, time_us);
CREATE INDEX audit_events_actor ON audit_events (tenant_id, actor_id, seq);
CREATE INDEX audit_events_action ON audit_events (tenant_id, action, seq);
CREATE INDEX audit_events_resource ON audit_events (tenant_id, resource_type, resource_id, seq);

-- The head of each tenant chain: a lock point that serialises appenders, and O(1)
-- access to the last hash. Verification never trusts it.
CREATE TABLE audit_heads (
    tenant_id  uuid PRIMARY KEY REFERENCES tenants (id),
    seq        bigint NOT NULL CHECK (seq >= 0),
    hash       bytea NOT NULL CHECK (octet_length(hash) = 32)
);

CREATE TABLE audit_checkpoints (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    seq         bigint NOT NULL CHECK (seq >= 1),
    time_us     bigint NOT NULL,
    head        bytea NOT NULL CHECK (octet_length(head) = 32),
    public_key  bytea NOT NULL CHECK (octet_length(public_key) = 32),
    signature   bytea NOT NULL CHECK (octet_length(signature) = 64),
    PRIMARY KEY (tenant_id, seq)
);

CREATE TABLE platform_audit_events (
    seq                bigint PRIMARY KEY CHECK (seq >= 1),
    time_us            bigint NOT NULL,
    actor_kind         text NOT NULL,
    actor_id           text NOT NULL,
    actor_role         text NOT NULL,
    source_ip          text NOT NULL,
    source_user_agent  text NOT NULL,
    source_device      text NOT NULL,
    action             text NOT NULL,
    resource_type      text NOT NULL,
    resource_id        text NOT NULL,
    fields             text NOT NULL,
    outcome            text NOT NULL,
    reason             text,
    request_id         text NOT NULL,
    before_json        text,
    after_json         text,
    prev_hash          bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash               bytea NOT NULL CHECK (octet_length(hash) = 32)
);

CREATE TABLE platform_audit_head (
    id    integer PRIMARY KEY CHECK (id = 1),
    seq   bigint NOT NULL CHECK (seq >= 0),
    hash  bytea NOT NULL CHECK (octet_length(hash) = 32)
);
INSERT INTO platform_audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

CREATE TABLE platform_audit_checkpoints (
    seq         bigint PRIMARY KEY CHECK (seq >= 1),
    time_us     bigint NOT NULL,
    head        bytea NOT NULL CHECK (octet_length(head) = 32),
    public_key  bytea NOT NULL CHECK (octet_length(public_key) = 32),
    signature   bytea NOT NULL CHECK (octet_length(signature) = 64)
);

-- The checkpoint signing key: an Ed25519 seed wrapped by the key provider. Only an
-- unsealed server (or operator) can sign; verifiers pin the public key.
CREATE TABLE audit_signing_keys (
    public_key  bytea PRIMARY KEY CHECK (octet_length(public_key) = 32),
    provider    text NOT NULL,
    wrapped     bytea NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE FUNCTION phivault_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records are append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['audit_events', 'audit_checkpoints', 'platform_audit_events',
                             'platform_audit_checkpoints', 'audit_signing_keys'] LOOP
        EXECUTE format('CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON %I
                            FOR EACH ROW EXECUTE FUNCTION phivault_audit_append_only()', t);
        EXECUTE format('CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON %I
                            FOR EACH STATEMENT EXECUTE FUNCTION phivault_audit_append_only()', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['audit_events', 'audit_heads', 'audit_checkpoints'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = phivault_current_tenant())
                            WITH CHECK (tenant_id = phivault_current_tenant())', t);
    END LOOP;
END $$;
