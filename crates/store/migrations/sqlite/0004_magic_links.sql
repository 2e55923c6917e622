-- Magic-link sign-in (SQLite). A link carries a single-use token; only its SHA-256 hash
-- is stored. A link is used once (used_at), expires (expires_at), and belongs to one user
-- of one tenant.

CREATE TABLE magic_links (
    tenant_id   BLOB NOT NULL,
    id          BLOB NOT NULL,
    user_id     BLOB NOT NULL,
    token_hash  BLOB NOT NULL CHECK (length(token_hash) = 32),
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    used_at     TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX magic_links_user ON magic_links (tenant_id, user_id);
