-- Transcripts, notes, retention policies and the training opt-in (SQLite).
--
-- A transcript is one engine's reading of one recording: segments with times and, where
-- the engine gives them, speaker roles, sealed as one JSON document under the
-- transcript's own data key; the engine and model that produced it are kept beside it.
-- A note is drafted from one transcript by one generator, sealed the same way, and
-- approved by a clinician. Both are unique per source, so a retried job step finds the
-- row it wrote before instead of writing a second.
--
-- Retention: one policy per tenant and data class (audio, transcript, note,
-- e2e_utterance); a class without a row uses the built-in default (audio: 24 hours after
-- its note is generated). Deleting destroys the data key and the bytes, and keeps the
-- row with its deleted_at so the deletion log survives.
--
-- Training: a tenant flag, off by default, with who set it and when; exports for model
-- training are refused while it is off.

CREATE TABLE transcripts (
    tenant_id      BLOB NOT NULL,
    id             BLOB NOT NULL,
    recording_id   BLOB NOT NULL,
    encounter_id   BLOB NOT NULL,
    practice_id    BLOB NOT NULL,
    data_key_id    BLOB NOT NULL,
    engine         TEXT NOT NULL CHECK (length(engine) BETWEEN 1 AND 64),
    model          TEXT NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    segments       BLOB,
    segment_count  INTEGER NOT NULL CHECK (segment_count >= 0),
    created_at     TEXT NOT NULL,
    deleted_at     TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, recording_id),
    CHECK ((segments IS NULL) = (deleted_at IS NOT NULL)),
    FOREIGN KEY (tenant_id, recording_id) REFERENCES recordings (tenant_id, id),
    FOREIGN KEY (tenant_id, encounter_id) REFERENCES encounters (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
) STRICT;
CREATE INDEX transcripts_encounter ON transcripts (tenant_id, encounter_id);

CREATE TABLE notes (
    tenant_id      BLOB NOT NULL,
    id             BLOB NOT NULL,
    transcript_id  BLOB NOT NULL,
    encounter_id   BLOB NOT NULL,
    practice_id    BLOB NOT NULL,
    data_key_id    BLOB NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('soap', 'draatt')),
    generator      TEXT NOT NULL CHECK (length(generator) BETWEEN 1 AND 64),
    model          text,
    body           BLOB,
    status         TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'approved')),
    approved_by    BLOB,
    approved_at    TEXT,
    created_at     TEXT NOT NULL,
    deleted_at     TEXT,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, transcript_id),
    CHECK ((status = 'approved') = (approved_at IS NOT NULL)),
    CHECK ((body IS NULL) = (deleted_at IS NOT NULL)),
    FOREIGN KEY (tenant_id, transcript_id) REFERENCES transcripts (tenant_id, id),
    FOREIGN KEY (tenant_id, encounter_id) REFERENCES encounters (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
) STRICT;
CREATE INDEX notes_encounter ON notes (tenant_id, encounter_id);

CREATE TABLE retention_policies (
    tenant_id     BLOB NOT NULL REFERENCES tenants (id),
    data_class    TEXT NOT NULL CHECK (data_class IN ('audio', 'transcript', 'note', 'e2e_utterance')),
    window_hours  INTEGER NOT NULL CHECK (window_hours BETWEEN 1 AND 87600),
    basis         TEXT NOT NULL CHECK (basis IN ('after_note', 'after_creation')),
    updated_by    BLOB NOT NULL,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, data_class),
    CHECK (basis = 'after_creation' OR data_class = 'audio')
) STRICT;

ALTER TABLE tenant_settings ADD COLUMN training_opt_in INTEGER NOT NULL DEFAULT 0 CHECK (training_opt_in IN (0, 1));
ALTER TABLE tenant_settings ADD COLUMN training_opt_in_by BLOB;
ALTER TABLE tenant_settings ADD COLUMN training_opt_in_at TEXT;
ALTER TABLE tenant_settings ADD COLUMN note_kind TEXT NOT NULL DEFAULT 'soap'
    CHECK (note_kind IN ('soap', 'draatt'));
