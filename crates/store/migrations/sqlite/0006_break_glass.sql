-- Break-glass grants (SQLite): a staff member's time-boxed, reasoned access to one
-- tenant's PHI, or to one encounter of it, approved by a different super_admin. A
-- platform table (staff belong to no tenant); `target_tenant` names the tenant the grant
-- opens. A grant is pending until decided; an approved grant is live from its decision
-- until `expires_at` (at most 4 hours later, checked in code) unless revoked first.

CREATE TABLE break_glass_grants (
    id                BLOB PRIMARY KEY,
    requester_id      BLOB NOT NULL REFERENCES staff_users (id),
    target_tenant     BLOB NOT NULL REFERENCES tenants (id),
    encounter_id      BLOB,
    reason            TEXT NOT NULL CHECK (length(reason) BETWEEN 10 AND 1000),
    duration_minutes  INTEGER NOT NULL CHECK (duration_minutes BETWEEN 1 AND 240),
    requested_at      TEXT NOT NULL,
    decision          TEXT NOT NULL DEFAULT 'pending' CHECK (decision IN ('pending', 'approved', 'denied')),
    decided_by        BLOB REFERENCES staff_users (id),
    decided_at        TEXT,
    expires_at        TEXT,
    revoked_by        BLOB REFERENCES staff_users (id),
    revoked_at        TEXT,
    CHECK (decided_by IS NULL OR decided_by <> requester_id),
    CHECK ((decision = 'pending') = (decided_at IS NULL)),
    CHECK ((decision = 'approved') = (expires_at IS NOT NULL))
) STRICT;
CREATE INDEX break_glass_grants_requester ON break_glass_grants (requester_id);
CREATE INDEX break_glass_grants_tenant ON break_glass_grants (target_tenant);
