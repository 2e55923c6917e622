-- End-to-end encrypted sessions and guest devices (SQLite).
--
-- The server never holds a session key: it keeps the key's fingerprint (a hash of its
-- hash) and, per utterance, ciphertext | nonce | fingerprint | algorithm | sequence |
-- sender, which it can order, route and delete but not read. Invites are single-use and
-- only their SHA-256 hash is kept. Guest devices belong to no tenant (a patient device
-- may join sessions of several): their rows are platform rows, identified by their
-- Ed25519 public key.

ALTER TABLE tenant_settings
    ADD COLUMN e2e_retention_hours INTEGER NOT NULL DEFAULT 24
        CHECK (e2e_retention_hours BETWEEN 1 AND 8760);

CREATE TABLE guest_devices (
    id               BLOB PRIMARY KEY,
    public_key       BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),
    token_hash       BLOB CHECK (length(token_hash) = 32),
    sessions_joined  INTEGER NOT NULL DEFAULT 0 CHECK (sessions_joined >= 0),
    created_at       TEXT NOT NULL,
    last_seen_at     TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX guest_devices_token ON guest_devices (token_hash);

CREATE TABLE device_challenges (
    challenge_hash  BLOB PRIMARY KEY CHECK (length(challenge_hash) = 32),
    public_key      BLOB NOT NULL CHECK (length(public_key) = 32),
    expires_at      TEXT NOT NULL,
    used_at         TEXT
) STRICT;

CREATE TABLE e2e_sessions (
    tenant_id        BLOB NOT NULL REFERENCES tenants (id),
    id               BLOB NOT NULL,
    owner_id         BLOB NOT NULL,
    mode             TEXT NOT NULL CHECK (mode IN ('single_device', 'two_device')),
    key_fingerprint  TEXT NOT NULL CHECK (length(key_fingerprint) = 64 AND key_fingerprint NOT GLOB '*[^0-9a-f]*'),
    algorithm        TEXT NOT NULL CHECK (algorithm = 'AES-256-GCM'),
    status           TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ended')),
    last_position    INTEGER NOT NULL DEFAULT 0,
    created_at       TEXT NOT NULL,
    ended_at         TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, owner_id) REFERENCES users (tenant_id, id)
) STRICT;

CREATE TABLE e2e_participants (
    tenant_id      BLOB NOT NULL,
    session_id     BLOB NOT NULL,
    id             BLOB NOT NULL,
    user_id        BLOB,
    device_id      BLOB REFERENCES guest_devices (id),
    last_sequence  INTEGER NOT NULL DEFAULT 0,
    joined_at      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, session_id, device_id),
    CHECK ((user_id IS NULL) <> (device_id IS NULL)),
    FOREIGN KEY (tenant_id, session_id) REFERENCES e2e_sessions (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX e2e_participants_session ON e2e_participants (tenant_id, session_id);

CREATE TABLE e2e_invites (
    tenant_id    BLOB NOT NULL,
    id           BLOB NOT NULL,
    session_id   BLOB NOT NULL,
    token_hash   BLOB NOT NULL CHECK (length(token_hash) = 32),
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    used_at      TEXT,
    used_by      BLOB,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, session_id) REFERENCES e2e_sessions (tenant_id, id) ON DELETE CASCADE
) STRICT;

CREATE TABLE e2e_utterances (
    tenant_id        BLOB NOT NULL,
    session_id       BLOB NOT NULL,
    position         INTEGER NOT NULL CHECK (position > 0),
    id               BLOB NOT NULL,
    sender           BLOB NOT NULL,
    sequence         INTEGER NOT NULL CHECK (sequence > 0),
    nonce            BLOB NOT NULL CHECK (length(nonce) = 12),
    ciphertext       BLOB NOT NULL CHECK (length(ciphertext) BETWEEN 17 AND 65536),
    key_fingerprint  TEXT NOT NULL,
    algorithm        TEXT NOT NULL CHECK (algorithm = 'AES-256-GCM'),
    created_at       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, session_id, position),
    UNIQUE (tenant_id, session_id, sender, sequence),
    FOREIGN KEY (tenant_id, session_id) REFERENCES e2e_sessions (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX e2e_utterances_age ON e2e_utterances (tenant_id, created_at);
