-- End-to-end encrypted sessions and guest devices (PostgreSQL).
--
-- The server never holds a session key: it keeps the key's fingerprint (a hash of its
-- hash) and, per utterance, ciphertext | nonce | fingerprint | algorithm | sequence |
-- sender, which it can order, route and delete but not read. Invites are single-use and
-- only their SHA-256 hash is kept. Session tables are tenant tables with row-level
-- security. Guest devices belong to no tenant (a patient device may join sessions of
-- several): their rows are platform rows, identified by their Ed25519 public key.

ALTER TABLE tenant_settings
    ADD COLUMN e2e_retention_hours bigint NOT NULL DEFAULT 24
        CHECK (e2e_retention_hours BETWEEN 1 AND 8760);

CREATE TABLE guest_devices (
    id               uuid PRIMARY KEY,
    public_key       bytea NOT NULL UNIQUE CHECK (length(public_key) = 32),
    token_hash       bytea CHECK (length(token_hash) = 32),
    sessions_joined  bigint NOT NULL DEFAULT 0 CHECK (sessions_joined >= 0),
    created_at       timestamptz NOT NULL,
    last_seen_at     timestamptz NOT NULL
);
CREATE UNIQUE INDEX guest_devices_token ON guest_devices (token_hash);

CREATE TABLE device_challenges (
    challenge_hash  bytea PRIMARY KEY CHECK (length(challenge_hash) = 32),
    public_key      bytea NOT NULL CHECK (length(public_key) = 32),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);

CREATE TABLE e2e_sessions (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    id               uuid NOT NULL,
    owner_id         uuid NOT NULL,
    mode             text NOT NULL CHECK (mode IN ('single_device', 'two_device')),
    key_fingerprint  text NOT NULL CHECK (key_fingerprint ~ '^[0-9a-f]{64}$'),
    algorithm        text NOT NULL CHECK (algorithm = 'AES-256-GCM'),
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ended')),
    last_position    bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, id)
);

CREATE TABLE e2e_participants (
    tenant_id      uuid NOT NULL,
    session_id     uuid NOT NULL,
    id             uuid NOT NULL,
    user_id        uuid,
    device_id      uuid REFERENCES guest_devices (id),
    last_sequence  bigint NOT NULL DEFAULT 0,
    joined_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, session_id, device_id),
    CHECK ((user_id IS NULL) <> (device_id IS NULL)),
    FOREIGN KEY (tenant_id, session_id) REFERENCES e2e_sessions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX e2e_participants_session ON e2e_participants (tenant_id, session_id);

CREATE TABLE e2e_invites (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    session_id   uuid NOT NULL,
    token_hash   bytea NOT NULL CHECK (length(token_hash) = 32),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    used_by      uuid,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, session_id) REFERENCES e2e_sessions (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE e2e_utterances (
    tenant_id        uuid NOT NULL,
    session_id       uuid NOT NULL,
    position         bigint NOT NULL CHECK (position > 0),
    id               uuid NOT NULL,
    sender           uuid NOT NULL,
    sequence         bigint NOT NULL CHECK (sequence > 0),
    nonce            bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext       bytea NOT NULL CHECK (length(ciphertext) BETWEEN 17 AND 65536),
    key_fingerprint  text NOT NULL,
    algorithm        text NOT NULL CHECK (algorithm = 'AES-256-GCM'),
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, session_id, position),
    UNIQUE (tenant_id, session_id, sender, sequence),
    FOREIGN KEY (tenant_id, session_id) REFERENCES e2e_sessions (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX e2e_utterances_age ON e2e_utterances (tenant_id, created_at);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['e2e_sessions', 'e2e_participants', 'e2e_invites', 'e2e_utterances'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = phivault_current_tenant())
                            WITH CHECK (tenant_id = phivault_current_tenant())', t);
    END LOOP;
END $$;
