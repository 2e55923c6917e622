-- Break-glass grants (PostgreSQL): a staff member's time-boxed, reasoned access to one
-- tenant's PHI, or to one encounter of it, approved by a different super_admin. A
-- platform table (staff belong to no tenant); `target_tenant` names the tenant the grant
-- opens. A grant is pending until decided; an approved grant is live from its decision
-- until `expires_at` (at most 4 hours later) unless revoked first. The serving role may
-- not delete rows: the register of grants is kept with the audit trail.

CREATE TABLE break_glass_grants (
    id                uuid PRIMARY KEY,
    requester_id      uuid NOT NULL REFERENCES staff_users (id),
    target_tenant     uuid NOT NULL REFERENCES tenants (id),
    encounter_id      uuid,
    reason            text NOT NULL CHECK (length(reason) BETWEEN 10 AND 1000),
    duration_minutes  bigint NOT NULL CHECK (duration_minutes BETWEEN 1 AND 240),
    requested_at      timestamptz NOT NULL,
    decision          text NOT NULL DEFAULT 'pending' CHECK (decision IN ('pending', 'approved', 'denied')),
    decided_by        uuid REFERENCES staff_users (id),
    decided_at        timestamptz,
    expires_at        timestamptz,
    revoked_by        uuid REFERENCES staff_users (id),
    revoked_at        timestamptz,
    CHECK (decided_by IS NULL OR decided_by <> requester_id),
    CHECK ((decision = 'pending') = (decided_at IS NULL)),
    CHECK ((decision = 'approved') = (expires_at IS NOT NULL)),
    CHECK (expires_at IS NULL OR expires_at <= decided_at + interval '4 hours')
);
CREATE INDEX break_glass_grants_requester ON break_glass_grants (requester_id);
CREATE INDEX break_glass_grants_tenant ON break_glass_grants (target_tenant);
