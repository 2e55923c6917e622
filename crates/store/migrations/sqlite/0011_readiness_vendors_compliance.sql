-- PHI readiness, vendors and BAAs, and compliance records (SQLite).
--
-- A tenant starts with PHI mode off: its PHI routes are refused until an officer turns
-- PHI mode on, which needs every readiness gate to hold, and they close again whenever
-- a gate stops holding. A sandbox tenant is created as one by the operator, holds
-- synthetic data only, may use its routes without PHI mode and can never turn it on.
--
-- Vendors (subprocessors) are kept in two registries: the platform's (the services the
-- operator runs phivault on: object storage, KMS, SMTP, transcription and note
-- vendors) and each tenant's own. A BAA is recorded by the date it was signed and a
-- reference to where the signed document is kept, never the document itself.
--
-- Compliance records (security officer, risk assessments, training acknowledgements,
-- incidents, sanctions policy) are append-only: a change is a new version of the same
-- subject, so their history is their own audit trail beside the audit events.

-- Set once, when the operator creates the tenant; never changed.
ALTER TABLE tenants ADD COLUMN sandbox INTEGER NOT NULL DEFAULT 0 CHECK (sandbox IN (0, 1));
-- PHI mode sits with the tenant's other settings, so that a change commits in one
-- transaction with its audit event.
ALTER TABLE tenant_settings ADD COLUMN phi_mode INTEGER NOT NULL DEFAULT 0 CHECK (phi_mode IN (0, 1));
ALTER TABLE tenant_settings ADD COLUMN phi_mode_changed_by TEXT;
ALTER TABLE tenant_settings ADD COLUMN phi_mode_changed_at TEXT;

CREATE TABLE platform_vendors (
    id                BLOB PRIMARY KEY,
    key               TEXT NOT NULL UNIQUE CHECK (length(key) BETWEEN 2 AND 63 AND key NOT GLOB '*[^a-z0-9-]*' AND key NOT GLOB '-*'),
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    service           TEXT NOT NULL CHECK (length(service) BETWEEN 1 AND 200),
    touches_phi       INTEGER NOT NULL CHECK (touches_phi IN (0, 1)),
    baa_signed_on     TEXT,
    baa_evidence_ref  TEXT CHECK (length(baa_evidence_ref) BETWEEN 1 AND 500),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    CHECK ((baa_signed_on IS NULL) = (baa_evidence_ref IS NULL))
) STRICT;

CREATE TABLE tenant_vendors (
    tenant_id         BLOB NOT NULL REFERENCES tenants (id),
    id                BLOB NOT NULL,
    key               TEXT NOT NULL CHECK (length(key) BETWEEN 2 AND 63 AND key NOT GLOB '*[^a-z0-9-]*' AND key NOT GLOB '-*'),
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    service           TEXT NOT NULL CHECK (length(service) BETWEEN 1 AND 200),
    touches_phi       INTEGER NOT NULL CHECK (touches_phi IN (0, 1)),
    baa_signed_on     TEXT,
    baa_evidence_ref  TEXT CHECK (length(baa_evidence_ref) BETWEEN 1 AND 500),
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, key),
    CHECK ((baa_signed_on IS NULL) = (baa_evidence_ref IS NULL))
) STRICT;

-- The BAA between the tenant (the covered entity) and the operator of this server.
CREATE TABLE tenant_baas (
    tenant_id     BLOB PRIMARY KEY REFERENCES tenants (id),
    signed_on     TEXT NOT NULL,
    signatory     TEXT NOT NULL CHECK (length(signatory) BETWEEN 1 AND 200),
    evidence_ref  TEXT NOT NULL CHECK (length(evidence_ref) BETWEEN 1 AND 500),
    recorded_by   TEXT NOT NULL CHECK (length(recorded_by) BETWEEN 1 AND 200),
    recorded_at   TEXT NOT NULL
) STRICT;

CREATE TABLE compliance_records (
    tenant_id    BLOB NOT NULL REFERENCES tenants (id),
    id           BLOB NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('security_officer', 'risk_assessment',
                     'training_ack', 'incident', 'sanctions_policy')),
    subject      TEXT NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    version      INTEGER NOT NULL CHECK (version >= 1),
    body         TEXT NOT NULL CHECK (length(body) BETWEEN 2 AND 20000),
    recorded_by  TEXT NOT NULL CHECK (length(recorded_by) BETWEEN 1 AND 200),
    recorded_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind, subject, version)
) STRICT;

-- Versions are appended, never rewritten.
CREATE TRIGGER compliance_records_no_update BEFORE UPDATE ON compliance_records
    BEGIN SELECT RAISE(ABORT, 'compliance records are append-only'); END;
CREATE TRIGGER compliance_records_no_delete BEFORE DELETE ON compliance_records
    BEGIN SELECT RAISE(ABORT, 'compliance records are append-only'); END;
