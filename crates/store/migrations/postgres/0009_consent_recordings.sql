-- Consent to record, and recordings (PostgreSQL).
--
-- A recording of an encounter needs a consent record for that encounter: how it was
-- given (verbal, written, in-app), where (a US state as US-XX or a country as XX),
-- which consent text version was shown, who documented it and when, and whether the
-- jurisdiction requires every party's consent (then the record must say all parties
-- consented). Tenants may keep their own consent texts, versioned; the built-in text
-- is referred to by its version string alone. Consent texts are not PHI.
--
-- A recording's audio is one object sealed with the streaming AEAD under the
-- recording's own data key. The row and the data key are written only after the whole
-- upload passed its checksum and audio checks, in one transaction with its audit event:
-- a refused or broken upload leaves no row, and its staged object is aborted.

CREATE TABLE consent_texts (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    version      text NOT NULL CHECK (length(version) BETWEEN 1 AND 40),
    language     text NOT NULL CHECK (length(language) BETWEEN 2 AND 35),
    body         text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL,
    retired_at   timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name, version),
    FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id)
);

CREATE TABLE consents (
    tenant_id               uuid NOT NULL,
    id                      uuid NOT NULL,
    encounter_id            uuid NOT NULL,
    method                  text NOT NULL CHECK (method IN ('verbal', 'written', 'in_app')),
    jurisdiction            text NOT NULL CHECK (jurisdiction ~ '^([A-Z]{2}|US-[A-Z]{2})$'),
    all_party_required      boolean NOT NULL,
    all_parties_consented   boolean NOT NULL,
    consent_text_id         uuid,
    consent_text_version    text NOT NULL CHECK (length(consent_text_version) BETWEEN 1 AND 40),
    documented_by           uuid NOT NULL,
    obtained_at             timestamptz NOT NULL,
    created_at              timestamptz NOT NULL,
    revoked_at              timestamptz,
    revoked_by              uuid,
    PRIMARY KEY (tenant_id, id),
    CHECK (all_parties_consented OR NOT all_party_required),
    FOREIGN KEY (tenant_id, encounter_id) REFERENCES encounters (tenant_id, id),
    FOREIGN KEY (tenant_id, consent_text_id) REFERENCES consent_texts (tenant_id, id),
    FOREIGN KEY (tenant_id, documented_by) REFERENCES users (tenant_id, id)
);
CREATE INDEX consents_encounter ON consents (tenant_id, encounter_id);

CREATE TABLE recordings (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    encounter_id   uuid NOT NULL,
    practice_id    uuid NOT NULL,
    consent_id     uuid NOT NULL,
    created_by     uuid NOT NULL,
    data_key_id    uuid NOT NULL,
    state          text NOT NULL CHECK (state IN ('stored', 'deleted')),
    format         text,
    codec          text,
    sample_rate    bigint,
    channels       bigint,
    duration_ms    bigint CHECK (duration_ms >= 0),
    size_bytes     bigint CHECK (size_bytes >= 0),
    sha256         text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    created_at     timestamptz NOT NULL,
    stored_at      timestamptz,
    deleted_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, encounter_id) REFERENCES encounters (tenant_id, id),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices (tenant_id, id),
    FOREIGN KEY (tenant_id, consent_id) REFERENCES consents (tenant_id, id),
    FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
);
CREATE INDEX recordings_encounter ON recordings (tenant_id, encounter_id);
CREATE INDEX recordings_state ON recordings (tenant_id, state, created_at);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['consent_texts', 'consents', 'recordings'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = phivault_current_tenant())
                            WITH CHECK (tenant_id = phivault_current_tenant())', t);
    END LOOP;
END $$;
