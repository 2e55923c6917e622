-- The durable job queue (SQLite).
--
-- One row per pipeline step on one record: which step (`kind`), which record
-- (`subject_id`, an opaque id, never content), and where the step stands. Nothing in
-- this table is PHI: failures keep a short stable code, never a message. A step is
-- enqueued at most once per record (the unique key), in the transaction that wrote the
-- record. A worker claims a due job by taking a lease: a fresh token, its worker id and
-- an expiry. Completing, failing or extending a job requires the token to still match,
-- so a worker whose lease expired and was reclaimed by another can change nothing.
-- SQLite serializes writers (`BEGIN IMMEDIATE`), so claiming needs no row locks.

CREATE TABLE jobs (
    tenant_id         BLOB NOT NULL REFERENCES tenants (id),
    id                BLOB NOT NULL,
    kind              TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 64 AND kind NOT GLOB '*[^a-z0-9_]*'),
    subject_id        BLOB NOT NULL CHECK (length(subject_id) = 16),
    state             TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      INTEGER NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    run_after         TEXT NOT NULL,
    lease_owner       TEXT CHECK (length(lease_owner) BETWEEN 1 AND 128),
    lease_token       BLOB CHECK (length(lease_token) = 16),
    lease_expires_at  TEXT,
    last_error_code   TEXT CHECK (length(last_error_code) BETWEEN 1 AND 64 AND last_error_code NOT GLOB '*[^a-z0-9_]*'),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    finished_at       TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind, subject_id),
    CHECK (attempts <= max_attempts),
    -- A lease exists exactly while the job runs; a finish time exactly once it ended.
    CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK ((state = 'running') OR (lease_owner IS NULL AND lease_token IS NULL AND lease_expires_at IS NULL)),
    CHECK ((state IN ('succeeded', 'failed')) = (finished_at IS NOT NULL))
) STRICT;

-- Claiming looks for queued jobs that are due, then for running jobs whose lease ran out.
CREATE INDEX jobs_due ON jobs (tenant_id, run_after) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (tenant_id, lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_by_state ON jobs (tenant_id, state, created_at);
