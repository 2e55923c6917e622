-- The audit trail (SQLite). One hash chain per tenant (audit_events) and one for the
-- platform (platform_audit_events). Events and checkpoints are append-only: triggers
-- abort every UPDATE and DELETE. Times are microseconds since the Unix epoch (the
-- precision the chain hashes), so filters compare integers on both backends.

CREATE TABLE audit_events (
    tenant_id          BLOB NOT NULL REFERENCES tenants (id),
    seq                INTEGER NOT NULL CHECK (seq >= 1),
    time_us            INTEGER NOT NULL,
    actor_kind         TEXT NOT NULL,
    actor_id           TEXT NOT NULL,
    actor_role         TEXT NOT NULL,
    source_ip          TEXT NOT NULL,
    source_user_agent  TEXT NOT NULL,
    source_device      TEXT NOT NULL,
    action             TEXT NOT NULL,
    resource_type      TEXT NOT NULL,
    resource_id        TEXT NOT NULL,
    fields             TEXT NOT NULL,
    outcome            TEXT NOT NULL,
    reason             TEXT,
    request_id         TEXT NOT NULL,
    before_json        TEXT,
    after_json         TEXT,
    prev_hash          BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash               BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (tenant_id, seq)
) STRICT;
CREATE INDEX audit_events_time ON audit_events (tenant_id, time_us);
CREATE INDEX audit_events_actor ON audit_events (tenant_id, actor_id, seq);
CREATE INDEX audit_events_action ON audit_events (tenant_id, action, seq);
CREATE INDEX audit_events_resource ON audit_events (tenant_id, resource_type, resource_id, seq);

-- The head of each tenant chain: a lock point that serialises appenders, and O(1)
-- access to the last hash. Verification never trusts it.
CREATE TABLE audit_heads (
    tenant_id  BLOB PRIMARY KEY REFERENCES tenants (id),
    seq        INTEGER NOT NULL CHECK (seq >= 0),
    hash       BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE TABLE audit_checkpoints (
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    seq         INTEGER NOT NULL CHECK (seq >= 1),
    time_us     INTEGER NOT NULL,
    head        BLOB NOT NULL CHECK (length(head) = 32),
    public_key  BLOB NOT NULL CHECK (length(public_key) = 32),
    signature   BLOB NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (tenant_id, seq)
) STRICT;

CREATE TABLE platform_audit_events (
    seq                INTEGER PRIMARY KEY CHECK (seq >= 1),
    time_us            INTEGER NOT NULL,
    actor_kind         TEXT NOT NULL,
    actor_id           TEXT NOT NULL,
    actor_role         TEXT NOT NULL,
    source_ip          TEXT NOT NULL,
    source_user_agent  TEXT NOT NULL,
    source_device      TEXT NOT NULL,
    action             TEXT NOT NULL,
    resource_type      TEXT NOT NULL,
    resource_id        TEXT NOT NULL,
    fields             TEXT NOT NULL,
    outcome            TEXT NOT NULL,
    reason             TEXT,
    request_id         TEXT NOT NULL,
    before_json        TEXT,
    after_json         TEXT,
    prev_hash          BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash               BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE TABLE platform_audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL CHECK (seq >= 0),
    hash  BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;
INSERT INTO platform_audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

CREATE TABLE platform_audit_checkpoints (
    seq         INTEGER PRIMARY KEY CHECK (seq >= 1),
    time_us     INTEGER NOT NULL,
    head        BLOB NOT NULL CHECK (length(head) = 32),
    public_key  BLOB NOT NULL CHECK (length(public_key) = 32),
    signature   BLOB NOT NULL CHECK (length(signature) = 64)
) STRICT;

-- The checkpoint signing key: an Ed25519 seed wrapped by the key provider. Only an
-- unsealed server (or operator) can sign; verifiers pin the public key.
CREATE TABLE audit_signing_keys (
    public_key  BLOB PRIMARY KEY CHECK (length(public_key) = 32),
    provider    TEXT NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER platform_audit_events_no_update BEFORE UPDATE ON platform_audit_events
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER platform_audit_events_no_delete BEFORE DELETE ON platform_audit_events
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER platform_audit_checkpoints_no_update BEFORE UPDATE ON platform_audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER platform_audit_checkpoints_no_delete BEFORE DELETE ON platform_audit_checkpoints
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_signing_keys_no_update BEFORE UPDATE ON audit_signing_keys
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_signing_keys_no_delete BEFORE DELETE ON audit_signing_keys
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;

-- INSERT OR REPLACE deletes the old row without firing DELETE triggers (recursive
-- triggers are off), so an insert over an existing key is refused up front.
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN EXISTS (SELECT 1 FROM audit_events WHERE tenant_id = NEW.tenant_id AND seq = NEW.seq)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_checkpoints_no_replace BEFORE INSERT ON audit_checkpoints
WHEN EXISTS (SELECT 1 FROM audit_checkpoints WHERE tenant_id = NEW.tenant_id AND seq = NEW.seq)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER platform_audit_events_no_replace BEFORE INSERT ON platform_audit_events
WHEN EXISTS (SELECT 1 FROM platform_audit_events WHERE seq = NEW.seq)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER platform_audit_checkpoints_no_replace BEFORE INSERT ON platform_audit_checkpoints
WHEN EXISTS (SELECT 1 FROM platform_audit_checkpoints WHERE seq = NEW.seq)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER audit_signing_keys_no_replace BEFORE INSERT ON audit_signing_keys
WHEN EXISTS (SELECT 1 FROM audit_signing_keys WHERE public_key = NEW.public_key)
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
