-- The staff realm (PostgreSQL): platform operators, kept apart from tenant users. These
-- are platform tables (no tenant_id, so no row-level security): a staff member belongs
-- to no tenant. Passwords are argon2id PHC strings; TOTP secrets are wrapped by the key
-- provider's platform root; recovery codes are kept as SHA-256 hashes; sessions idle out
-- after 15 minutes and end after 12 hours; a challenge is a sign-in that passed its
-- password and waits for TOTP.

CREATE TABLE staff_users (
    id             uuid PRIMARY KEY,
    email          text NOT NULL UNIQUE,
    display_name   text NOT NULL,
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('super_admin', 'platform_ops', 'support', 'finance', 'read_only')),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    created_at     timestamptz NOT NULL
);

CREATE TABLE staff_totp (
    staff_id        uuid PRIMARY KEY REFERENCES staff_users (id) ON DELETE CASCADE,
    provider        text NOT NULL,
    secret          bytea NOT NULL,
    enabled_at      timestamptz,
    last_used_step  bigint NOT NULL DEFAULT 0,
    failures        bigint NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL
);

CREATE TABLE staff_recovery_codes (
    staff_id   uuid NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL CHECK (octet_length(code_hash) = 32),
    used_at    timestamptz,
    PRIMARY KEY (staff_id, code_hash)
);

CREATE TABLE staff_sessions (
    id            uuid PRIMARY KEY,
    staff_id      uuid NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX staff_sessions_staff ON staff_sessions (staff_id);

CREATE TABLE staff_challenges (
    id          uuid PRIMARY KEY,
    staff_id    uuid NOT NULL REFERENCES staff_users (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
