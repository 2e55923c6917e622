-- Magic-link sign-in (PostgreSQL). A link carries a single-use token; only its SHA-256
-- hash is stored. A link is used once (used_at), expires (expires_at), and belongs to one
-- user of one tenant; row-level security isolates tenants.

CREATE TABLE magic_links (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL,
    user_id     uuid NOT NULL,
    token_hash  bytea NOT NULL CHECK (length(token_hash) = 32),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX magic_links_user ON magic_links (tenant_id, user_id);

ALTER TABLE magic_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE magic_links FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON magic_links
    USING (tenant_id = phivault_current_tenant())
    WITH CHECK (tenant_id = phivault_current_tenant());
