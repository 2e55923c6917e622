-- The durable job queue (PostgreSQL).
--
-- One row per pipeline step on one record: which step (`kind`), which record
-- (`subject_id`, an opaque id, never content), and where the step stands. Nothing in
-- this table is PHI: failures keep a short stable code, never a message. A step is
-- enqueued at most once per record (the unique key), in the transaction that wrote the
-- record. A worker claims a due job by taking a lease: a fresh token, its worker id and
-- an expiry. Completing, failing or extending a job requires the token to still match,
-- so a worker whose lease expired and was reclaimed by another can change nothing.
-- Concurrent workers claim with SELECT ... FOR UPDATE SKIP LOCKED, inside a transaction
-- bound to one tenant, so row-level security applies to the queue too.

CREATE TABLE jobs (
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    id                uuid NOT NULL,
    kind              text NOT NULL CHECK (kind ~ '^[a-z0-9_]{1,64}$'),
    subject_id        uuid NOT NULL,
    state             text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    attempts          bigint NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      bigint NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    run_after         timestamptz NOT NULL,
    lease_owner       text CHECK (length(lease_owner) BETWEEN 1 AND 128),
    lease_token       uuid,
    lease_expires_at  timestamptz,
    last_error_code   text CHECK (last_error_code ~ '^[a-z0-9_]{1,64}$'),
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind, subject_id),
    CHECK (attempts <= max_attempts),
    -- A lease exists exactly while the job runs; a finish time exactly once it ended.
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((state = 'running') OR (lease_owner IS NULL AND lease_token IS NULL AND lease_expires_at IS NULL)),
    CHECK ((state IN ('succeeded', 'failed')) = (finished_at IS NOT NULL))
);

-- Claiming looks for queued jobs that are due, then for running jobs whose lease ran out.
CREATE INDEX jobs_due ON jobs (tenant_id, run_after) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (tenant_id, lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_by_state ON jobs (tenant_id, state, created_at);

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON jobs
    USING (tenant_id = phivault_current_tenant())
    WITH CHECK (tenant_id = phivault_current_tenant());
