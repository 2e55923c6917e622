-- Sessions of tenant users (SQLite): one row per sign-in; the access tokens it issues
-- are short-lived signed tokens naming it, checked against it on every request, so a
-- sign-out or a deactivation takes effect at once. Refresh tokens (remember me) are kept
-- hashed, one row per token ever issued, so that a replayed old one is recognised and
-- revokes its whole session.

CREATE TABLE tenant_settings (
    tenant_id              BLOB PRIMARY KEY REFERENCES tenants (id),
    session_idle_secs      INTEGER NOT NULL CHECK (session_idle_secs BETWEEN 60 AND 86400),
    session_absolute_secs  INTEGER NOT NULL CHECK (session_absolute_secs BETWEEN 300 AND 2592000),
    mfa_policy             TEXT NOT NULL DEFAULT 'none' CHECK (mfa_policy IN ('none', 'admins', 'everyone')),
    updated_at             TEXT NOT NULL
) STRICT;

CREATE TABLE sessions (
    tenant_id       BLOB NOT NULL,
    id              BLOB NOT NULL,
    user_id         BLOB NOT NULL,
    remember        INTEGER NOT NULL CHECK (remember IN (0, 1)),
    created_at      TEXT NOT NULL,
    last_seen_at    TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT,
    revoked_reason  TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

CREATE TABLE session_refresh_tokens (
    tenant_id   BLOB NOT NULL,
    token_hash  BLOB NOT NULL CHECK (length(token_hash) = 32),
    session_id  BLOB NOT NULL,
    issued_at   TEXT NOT NULL,
    used_at     TEXT,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- Platform secrets (the session-token signing key), wrapped by the key provider.
CREATE TABLE platform_secrets (
    purpose     TEXT NOT NULL,
    id          BLOB NOT NULL,
    provider    TEXT NOT NULL,
    wrapped     BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (purpose, id)
) STRICT;

-- TOTP second factors: the secret sealed under a data key of the tenant, the last time
-- step accepted (a code is accepted once), and hashed single-use recovery codes.
CREATE TABLE user_totp (
    tenant_id       BLOB NOT NULL,
    user_id         BLOB NOT NULL,
    data_key_id     BLOB NOT NULL,
    secret          BLOB NOT NULL,
    enabled_at      TEXT,
    last_used_step  INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    locked_until    TEXT,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
) STRICT;

CREATE TABLE recovery_codes (
    tenant_id  BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    code_hash  BLOB NOT NULL CHECK (length(code_hash) = 32),
    used_at    TEXT,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- A sign-in that passed its first factor and waits for the second.
CREATE TABLE mfa_challenges (
    tenant_id   BLOB NOT NULL,
    id          BLOB NOT NULL,
    user_id     BLOB NOT NULL,
    remember    INTEGER NOT NULL CHECK (remember IN (0, 1)),
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
) STRICT;
