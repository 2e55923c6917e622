-- PHI readiness, vendors and BAAs, and compliance records (PostgreSQL).
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
ALTER TABLE tenants ADD COLUMN sandbox boolean NOT NULL DEFAULT false;
-- PHI mode sits with the tenant's other settings, under row-level security, so that a
-- change commits in one transaction with its audit event.
ALTER TABLE tenant_settings ADD COLUMN phi_mode boolean NOT NULL DEFAULT false;
ALTER TABLE tenant_settings ADD COLUMN phi_mode_changed_by text;
ALTER TABLE tenant_settings ADD COLUMN phi_mode_changed_at timestamptz;

CREATE TABLE platform_vendors (
    id                uuid PRIMARY KEY,
    key               text NOT NULL UNIQUE CHECK (key ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    service           text NOT NULL CHECK (length(service) BETWEEN 1 AND 200),
    touches_phi       boolean NOT NULL,
    baa_signed_on     date,
    baa_evidence_ref  text CHECK (length(baa_evidence_ref) BETWEEN 1 AND 500),
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CHECK ((baa_signed_on IS NULL) = (baa_evidence_ref IS NULL))
);

CREATE TABLE tenant_vendors (
    tenant_id         uuid NOT NULL REFERENCES tenants (id),
    id                uuid NOT NULL,
    key               text NOT NULL CHECK (key ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    service           text NOT NULL CHECK (length(service) BETWEEN 1 AND 200),
    touches_phi       boolean NOT NULL,
    baa_signed_on     date,
    baa_evidence_ref  text CHECK (length(baa_evidence_ref) BETWEEN 1 AND 500),
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, key),
    CHECK ((baa_signed_on IS NULL) = (baa_evidence_ref IS NULL))
);

-- The BAA between the tenant (the covered entity) and the operator of this server.
CREATE TABLE tenant_baas (
    tenant_id     uuid PRIMARY KEY REFERENCES tenants (id),
    signed_on     date NOT NULL,
    signatory     text NOT NULL CHECK (length(signatory) BETWEEN 1 AND 200),
    evidence_ref  text NOT NULL CHECK (length(evidence_ref) BETWEEN 1 AND 500),
    recorded_by   text NOT NULL CHECK (length(recorded_by) BETWEEN 1 AND 200),
    recorded_at   timestamptz NOT NULL
);

CREATE TABLE compliance_records (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('security_officer', 'risk_assessment',
                     'training_ack', 'incident', 'sanctions_policy')),
    subject      text NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
    version      bigint NOT NULL CHECK (version >= 1),
    body         text NOT NULL CHECK (length(body) BETWEEN 2 AND 20000),
    recorded_by  text NOT NULL CHECK (length(recorded_by) BETWEEN 1 AND 200),
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, kind, subject, version)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_vendors', 'tenant_baas', 'compliance_records'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = phivault_current_tenant())
                            WITH CHECK (tenant_id = phivault_current_tenant())', t);
    END LOOP;
END $$;
