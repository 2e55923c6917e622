-- phivault foundation schema (SQLite, the embedded default).
-- SQLite has no row-level security: isolation rests on the store's tenant-scoped
-- handle, which binds tenant_id as the first parameter of every statement. Primary
-- keys lead with tenant_id and foreign keys are composite, as on PostgreSQL.
-- Ids are 16-byte BLOBs (UUID), times RFC 3339 TEXT in UTC.

CREATE TABLE tenants (
    id          BLOB PRIMARY KEY CHECK (length(id) = 16),
    slug        TEXT NOT NULL UNIQUE CHECK (length(slug) BETWEEN 2 AND 63),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status      TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE practices (
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    id          BLOB NOT NULL,
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
) STRICT;

CREATE TABLE users (
    tenant_id      BLOB NOT NULL REFERENCES tenants (id),
    id             BLOB NOT NULL,
    email          TEXT NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    display_name   TEXT NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    all_practices  INTEGER NOT NULL CHECK (all_practices IN (0, 1)),
    created_at     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, email)
) STRICT;

CREATE TABLE user_roles (
    tenant_id  BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'billing', 'provider', 'qa')),
    PRIMARY KEY (tenant_id, user_id, role),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
) STRICT;

CREATE TABLE user_practices (
    tenant_id    BLOB NOT NULL,
    user_id      BLOB NOT NULL,
    practice_id  BLOB NOT NULL,
    PRIMARY KEY (tenant_id, user_id, practice_id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices (tenant_id, id)
) STRICT;

CREATE TABLE api_tokens (
    tenant_id    BLOB NOT NULL,
    id           BLOB NOT NULL,
    user_id      BLOB NOT NULL,
    token_hash   BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    label        TEXT NOT NULL CHECK (length(label) <= 200),
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- Key hierarchy: see the PostgreSQL migration for the meaning of each column.
CREATE TABLE tenant_keks (
    tenant_id     BLOB NOT NULL REFERENCES tenants (id),
    version       INTEGER NOT NULL CHECK (version >= 1),
    provider      TEXT NOT NULL,
    wrapped       BLOB,
    state         TEXT NOT NULL CHECK (state IN ('active', 'retiring', 'destroyed')),
    created_at    TEXT NOT NULL,
    destroyed_at  TEXT,
    PRIMARY KEY (tenant_id, version),
    CHECK ((state = 'destroyed') = (wrapped IS NULL))
) STRICT;
CREATE UNIQUE INDEX tenant_keks_one_active ON tenant_keks (tenant_id) WHERE state = 'active';

CREATE TABLE data_keys (
    tenant_id     BLOB NOT NULL,
    id            BLOB NOT NULL,
    kek_version   INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (length(kind) BETWEEN 1 AND 40),
    wrapped       BLOB,
    created_at    TEXT NOT NULL,
    destroyed_at  TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, kek_version) REFERENCES tenant_keks (tenant_id, version)
) STRICT;
CREATE INDEX data_keys_kek ON data_keys (tenant_id, kek_version);

-- PHI columns hold envelopes sealed under the record's data key; the MRN is found by its
-- keyed blind index.
CREATE TABLE patients (
    tenant_id      BLOB NOT NULL,
    id             BLOB NOT NULL,
    practice_id    BLOB NOT NULL,
    data_key_id    BLOB NOT NULL,
    mrn_index      BLOB NOT NULL CHECK (length(mrn_index) = 32),
    mrn            BLOB NOT NULL,
    given_name     BLOB NOT NULL,
    family_name    BLOB NOT NULL,
    date_of_birth  BLOB NOT NULL,
    ssn_index      BLOB CHECK (length(ssn_index) = 32),
    ssn            BLOB,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
) STRICT;
CREATE INDEX patients_practice ON patients (tenant_id, practice_id);
CREATE INDEX patients_mrn ON patients (tenant_id, mrn_index);
CREATE INDEX patients_ssn ON patients (tenant_id, ssn_index) WHERE ssn_index IS NOT NULL;

CREATE TABLE patient_identifiers (
    tenant_id    BLOB NOT NULL,
    patient_id   BLOB NOT NULL,
    kind         TEXT NOT NULL CHECK (length(kind) BETWEEN 2 AND 40),
    value        BLOB NOT NULL,
    value_index  BLOB NOT NULL CHECK (length(value_index) = 32),
    PRIMARY KEY (tenant_id, patient_id, kind),
    FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX patient_identifiers_lookup ON patient_identifiers (tenant_id, kind, value_index);

CREATE TABLE encounters (
    tenant_id    BLOB NOT NULL,
    id           BLOB NOT NULL,
    patient_id   BLOB NOT NULL,
    practice_id  BLOB NOT NULL,
    provider_id  BLOB NOT NULL,
    data_key_id  BLOB NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    reason       BLOB,
    started_at   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, patient_id) REFERENCES patients (tenant_id, id),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices (tenant_id, id),
    FOREIGN KEY (tenant_id, provider_id) REFERENCES users (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
) STRICT;
CREATE INDEX encounters_patient ON encounters (tenant_id, patient_id);
CREATE INDEX encounters_practice ON encounters (tenant_id, practice_id, created_at);
