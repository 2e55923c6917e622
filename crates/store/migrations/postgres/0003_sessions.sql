-- Sessions of tenant users (PostgreSQL): one row per sign-in; the access tokens it issues
-- are short-lived signed tokens naming it, checked against it on every request, so a
-- sign-out or a deactivation takes effect at once. Refresh tokens (remember me) are kept
-- hashed, one row per token ever issued, so that a replayed old one is recognised and
-- revokes its whole session.

CREATE TABLE tenant_settings (
    tenant_id              uuid PRIMARY KEY REFERENCES tenants (id),
    session_idle_secs      bigint NOT NULL CHECK (session_idle_secs BETWEEN 60 AND 86400),
    session_absolute_secs  bigint NOT NULL CHECK (session_absolute_secs BETWEEN 300 AND 2592000),
    mfa_policy             text NOT NULL DEFAULT 'none' CHECK (mfa_policy IN ('none', 'admins', 'everyone')),
    updated_at             timestamptz NOT NULL
);

CREATE TABLE sessions (
    tenant_id       uuid NOT NULL,
    id              uuid NOT NULL,
    user_id         uuid NOT NULL,
    remember        boolean NOT NULL,
    created_at      timestamptz NOT NULL,
    last_seen_at    timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX sessions_user ON sessions (tenant_id, user_id);

CREATE TABLE session_refresh_tokens (
    tenant_id   uuid NOT NULL,
    token_hash  bytea NOT NULL CHECK (octet_length(token_hash) = 32),
    session_id  uuid NOT NULL,
    issued_at   timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, session_id) REFERENCES sessions (tenant_id, id) ON DELETE CASCADE
);

-- Platform secrets (the session-token signing key), wrapped by the key provider.
CREATE TABLE platform_secrets (
    purpose     text NOT NULL,
    id          uuid NOT NULL,
    provider    text NOT NULL,
    wrapped     bytea NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (purpose, id)
);

-- TOTP second factors: the secret sealed under a data key of the tenant, the last time
-- step accepted (a code is accepted once), and hashed single-use recovery codes.
CREATE TABLE user_totp (
    tenant_id       uuid NOT NULL,
    user_id         uuid NOT NULL,
    data_key_id     uuid NOT NULL,
    secret          bytea NOT NULL,
    enabled_at      timestamptz,
    last_used_step  bigint NOT NULL DEFAULT 0,
    failures        bigint NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
);

CREATE TABLE recovery_codes (
    tenant_id  uuid NOT NULL,
    user_id    uuid NOT NULL,
    code_hash  bytea NOT NULL CHECK (octet_length(code_hash) = 32),
    used_at    timestamptz,
    PRIMARY KEY (tenant_id, user_id, code_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

-- A sign-in that passed its first factor and waits for the second.
CREATE TABLE mfa_challenges (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL,
    user_id     uuid NOT NULL,
    remember    boolean NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_settings', 'sessions', 'session_refresh_tokens', 'user_totp',
                             'recovery_codes', 'mfa_challenges'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = phivault_current_tenant())
                            WITH CHECK (tenant_id = phivault_current_tenant())', t);
    END LOOP;
END $$;
