-- Consent to record, and recordings (SQLite).
--
-- A recording of an encounter needs a consent record for that encounter: how it was
-- given (verbal, written, in-app), where (a US state as US-XX or a country as XX),
-- which consent TEXT version was shown, who documented it and when, and whether the
-- jurisdiction requires every party's consent (then the record must say all parties
-- consented). Tenants may keep their own consent texts, versioned; the built-in text
-- is referred to by its version string alone. Consent texts are not PHI.
--
-- A recording's audio is one object sealed with the streaming AEAD under the
-- recording's own data key. The row and the data key are written only after the whole
-- upload passed its checksum and audio checks, in one transaction with its audit event:
-- a refused or broken upload leaves no row, and its staged object is aborted.

CREATE TABLE consent_texts (
    tenant_id    BLOB NOT NULL REFERENCES tenants (id),
    id           BLOB NOT NULL,
    name         TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    version      TEXT NOT NULL CHECK (length(version) BETWEEN 1 AND 40),
    language     TEXT NOT NULL CHECK (length(language) BETWEEN 2 AND 35),
    body         TEXT NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    created_by   BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    retired_at   TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name, version),
    FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id)
) STRICT;

CREATE TABLE consents (
    tenant_id               BLOB NOT NULL,
    id                      BLOB NOT NULL,
    encounter_id            BLOB NOT NULL,
    method                  TEXT NOT NULL CHECK (method IN ('verbal', 'written', 'in_app')),
    jurisdiction            TEXT NOT NULL CHECK ((length(jurisdiction) = 2 AND jurisdiction NOT GLOB '*[^A-Z]*') OR (length(jurisdiction) = 5 AND jurisdiction GLOB 'US-[A-Z][A-Z]')),
    all_party_required      INTEGER NOT NULL CHECK (all_party_required IN (0, 1)),
    all_parties_consented   INTEGER NOT NULL CHECK (all_parties_consented IN (0, 1)),
    consent_text_id         BLOB,
    consent_text_version    TEXT NOT NULL CHECK (length(consent_text_version) BETWEEN 1 AND 40),
    documented_by           BLOB NOT NULL,
    obtained_at             TEXT NOT NULL,
    created_at              TEXT NOT NULL,
    revoked_at              TEXT,
    revoked_by              BLOB,
    PRIMARY KEY (tenant_id, id),
    CHECK (all_parties_consented = 1 OR all_party_required = 0),
    FOREIGN KEY (tenant_id, encounter_id) REFERENCES encounters (tenant_id, id),
    FOREIGN KEY (tenant_id, consent_text_id) REFERENCES consent_texts (tenant_id, id),
    FOREIGN KEY (tenant_id, documented_by) REFERENCES users (tenant_id, id)
) STRICT;
CREATE INDEX consents_encounter ON consents (tenant_id, encounter_id);

CREATE TABLE recordings (
    tenant_id      BLOB NOT NULL,
    id             BLOB NOT NULL,
    encounter_id   BLOB NOT NULL,
    practice_id    BLOB NOT NULL,
    consent_id     BLOB NOT NULL,
    created_by     BLOB NOT NULL,
    data_key_id    BLOB NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('stored', 'deleted')),
    format         text,
    codec          text,
    sample_rate    INTEGER,
    channels       INTEGER,
    duration_ms    INTEGER CHECK (duration_ms >= 0),
    size_bytes     INTEGER CHECK (size_bytes >= 0),
    sha256         TEXT CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    created_at     TEXT NOT NULL,
    stored_at      TEXT,
    deleted_at     TEXT,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, encounter_id) REFERENCES encounters (tenant_id, id),
    FOREIGN KEY (tenant_id, practice_id) REFERENCES practices (tenant_id, id),
    FOREIGN KEY (tenant_id, consent_id) REFERENCES consents (tenant_id, id),
    FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
) STRICT;
CREATE INDEX recordings_encounter ON recordings (tenant_id, encounter_id);
CREATE INDEX recordings_state ON recordings (tenant_id, state, created_at);
