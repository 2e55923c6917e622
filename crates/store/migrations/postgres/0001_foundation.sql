-- phivault foundation schema (PostgreSQL).
-- Every table that holds a tenant_id has row-level security ENABLED and FORCED, with a
-- policy on the transaction-local setting `phivault.tenant_id`. Primary keys lead with
-- tenant_id and foreign keys are composite, so a row can never reference another
-- tenant's row even through a bug.

CREATE FUNCTION phivault_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('phivault.tenant_id', true), '')::uuid $$;

-- Platform registry of tenants: metadata only (no PHI), so it is not tenant-scoped.
CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  timestamptz NOT NULL
);

CREATE TABLE practices (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);

CREATE TABLE users (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    id             uuid NOT NULL,
    email          text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    display_name   text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    all_practices  boolean NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
);

CREATE TABLE user_roles (
    tenant_id  uuid NOT NULL,
    user_id    uuid NOT NULL,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'billing', 'provider', 'qa')),
    PRIMARY KEY (tenant_id, user_id, role),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE user_practices (
    tenant_id    uuid NOT NULL,
    user_id      uuid NOT NULL,
    practice_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, user_id, practice_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices (tenant_id, id)
);

CREATE TABLE api_tokens (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    user_id      uuid NOT NULL,
    token_hash   bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    label        text NOT NULL CHECK (length(label) <= 200),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

-- Key hierarchy. A tenant's key-encryption keys (KEKs), versioned, wrapped by the key
-- provider's root key; a NULL `wrapped` means the version was destroyed. Data keys, one
-- per object or record, wrapped by a KEK version; destroying one (wrapped = NULL)
-- crypto-shreds what it sealed, in backups too.
CREATE TABLE tenant_keks (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    version       bigint NOT NULL CHECK (version >= 1),
    provider      text NOT NULL,
    wrapped       bytea,
    state         text NOT NULL CHECK (state IN ('active', 'retiring', 'destroyed')),
    created_at    timestamptz NOT NULL,
    destroyed_at  timestamptz,
    PRIMARY KEY (tenant_id, version),
    CHECK ((state = 'destroyed') = (wrapped IS NULL))
);
CREATE UNIQUE INDEX tenant_keks_one_active ON tenant_keks (tenant_id) WHERE state = 'active';

CREATE TABLE data_keys (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL,
    kek_version   bigint NOT NULL,
    kind          text NOT NULL CHECK (length(kind) BETWEEN 1 AND 40),
    wrapped       bytea,
    created_at    timestamptz NOT NULL,
    destroyed_at  timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, kek_version) REFERENCES tenant_keks (tenant_id, version)
);
CREATE INDEX data_keys_kek ON data_keys (tenant_id, kek_version);

-- PHI. Every PHI column holds an envelope (docs/formats.md) sealed under the record's
-- data key and bound to tenant, record and field; the MRN is found by its keyed blind
-- index, never by plaintext.
CREATE TABLE patients (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    practice_id    uuid NOT NULL,
    data_key_id    uuid NOT NULL,
    mrn_index      bytea NOT NULL CHECK (length(mrn_index) = 32),
    mrn            bytea NOT NULL,
    given_name     bytea NOT NULL,
    family_name    bytea NOT NULL,
    date_of_birth  bytea NOT NULL,
    ssn_index      bytea CHECK (length(ssn_index) = 32),
    ssn            bytea,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
);
CREATE INDEX patients_practice ON patients (tenant_id, practice_id);
CREATE INDEX patients_mrn ON patients (tenant_id, mrn_index);
CREATE INDEX patients_ssn ON patients (tenant_id, ssn_index) WHERE ssn_index IS NOT NULL;

-- Further patient identifiers (insurance member id, driver's licence, ...): every one is
-- treated as sensitive, sealed under the patient's data key and found by blind index.
CREATE TABLE patient_identifiers (
    tenant_id    uuid NOT NULL,
    patient_id   uuid NOT NULL,
    kind         text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{1,39}$'),
    value        bytea NOT NULL,
    value_index  bytea NOT NULL CHECK (length(value_index) = 32),
    PRIMARY KEY (tenant_id, patient_id, kind),
    FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX patient_identifiers_lookup ON patient_identifiers (tenant_id, kind, value_index);

CREATE TABLE encounters (
    tenant_id    uuid NOT NULL,
    id           uuid NOT NULL,
    patient_id   uuid NOT NULL,
    practice_id  uuid NOT NULL,
    provider_id  uuid NOT NULL,
    data_key_id  uuid NOT NULL,
    status       text NOT NULL CHECK (status IN ('open', 'closed')),
    reason       bytea,
    started_at   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES users (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
);
CREATE INDEX encounters_patient ON encounters (tenant_id, patient_id);
CREATE INDEX encounters_practice ON encounters (tenant_id, practice_id, created_at);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['practices', 'users', 'user_roles', 'user_practices',
                             'api_tokens', 'tenant_keks', 'data_keys', 'patients', 'patient_identifiers',
                             'encounters'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = phivault_current_tenant())
                            WITH CHECK (tenant_id = phivault_current_tenant())', t);
    END LOOP;
END $$;
