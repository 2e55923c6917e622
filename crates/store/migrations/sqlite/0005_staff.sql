-- The staff realm (SQLite): platform operators, kept apart from tenant users. These are
-- platform tables (no tenant_id): a staff member belongs to no tenant. Passwords are
-- argon2id PHC strings; TOTP secrets are wrapped by the key provider's platform root;
-- recovery codes are kept as SHA-256 hashes; sessions idle out after 15 minutes and end
-- after 12 hours; a challenge is a sign-in that passed its password and waits for TOTP.

CREATE TABLE staff_users (
    id             BLOB PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('super_admin', 'platform_ops', 'support', 'finance', 'read_only')),
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    created_at     TEXT NOT NULL
) STRICT;

CREATE TABLE staff_totp (
    staff_id        BLOB PRIMARY KEY REFERENCES staff_users (id) ON DELETE CASCADE,
    provider        TEXT NOT NULL,
    secret          BLOB NOT NULL,
    enabled_at      TEXT,
    last_used_step  INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    locked_until    TEXT,
    created_at      TEXT NOT NULL
) STRICT;

CREATE TABLE staff_recovery_codes (
    staff_id   BLOB NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    code_hash  BLOB NOT NULL CHECK (length(code_hash) = 32),
    used_at    TEXT,
    PRIMARY KEY (staff_id, code_hash)
) STRICT;

CREATE TABLE staff_sessions (
    id            BLOB PRIMARY KEY,
    staff_id      BLOB NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    revoked_at    TEXT
) STRICT;
CREATE INDEX staff_sessions_staff ON staff_sessions (staff_id);

CREATE TABLE staff_challenges (
    id          BLOB PRIMARY KEY,
    staff_id    BLOB NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    expires_at  TEXT NOT NULL,
    used_at     TEXT
) STRICT;
