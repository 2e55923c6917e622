-- Transcripts, notes, retention policies and the training opt-in (PostgreSQL).
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
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    recording_id   uuid NOT NULL,
    encounter_id   uuid NOT NULL,
    practice_id    uuid NOT NULL,
    data_key_id    uuid NOT NULL,
    engine         text NOT NULL CHECK (length(engine) BETWEEN 1 AND 64),
    model          text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    segments       bytea,
    segment_count  bigint NOT NULL CHECK (segment_count >= 0),
    created_at     timestamptz NOT NULL,
    deleted_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, recording_id),
    CHECK ((segments IS NULL) = (deleted_at IS NOT NULL)),
    FOREIGN KEY (tenant_id, recording_id) REFERENCES recordings (tenant_id, id),
    FOREIGN KEY (tenant_id, encounter_id) REFERENCES encounters (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
);
CREATE INDEX transcripts_encounter ON transcripts (tenant_id, encounter_id);

CREATE TABLE notes (
    tenant_id      uuid NOT NULL,
    id             uuid NOT NULL,
    transcript_id  uuid NOT NULL,
    encounter_id   uuid NOT NULL,
    practice_id    uuid NOT NULL,
    data_key_id    uuid NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('soap', 'draatt')),
    generator      text NOT NULL CHECK (length(generator) BETWEEN 1 AND 64),
    model          text,
    body           bytea,
    status         text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'approved')),
    approved_by    uuid,
    approved_at    timestamptz,
    created_at     timestamptz NOT NULL,
    deleted_at     timestamptz,
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, transcript_id),
    CHECK ((status = 'approved') = (approved_at IS NOT NULL)),
    CHECK ((body IS NULL) = (deleted_at IS NOT NULL)),
    FOREIGN KEY (tenant_id, transcript_id) REFERENCES transcripts (tenant_id, id),
    FOREIGN KEY (tenant_id, encounter_id) REFERENCES encounters (tenant_id, id),
    FOREIGN KEY (tenant_id, data_key_id) REFERENCES data_keys (tenant_id, id)
);
CREATE INDEX notes_encounter ON notes (tenant_id, encounter_id);

CREATE TABLE retention_policies (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    data_class    text NOT NULL CHECK (data_class IN ('audio', 'transcript', 'note', 'e2e_utterance')),
    window_hours  bigint NOT NULL CHECK (window_hours BETWEEN 1 AND 87600),
    basis         text NOT NULL CHECK (basis IN ('after_note', 'after_creation')),
    updated_by    uuid NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, data_class),
    CHECK (basis = 'after_creation' OR data_class = 'audio')
);

ALTER TABLE tenant_settings ADD COLUMN training_opt_in boolean NOT NULL DEFAULT false;
ALTER TABLE tenant_settings ADD COLUMN training_opt_in_by uuid;
ALTER TABLE tenant_settings ADD COLUMN training_opt_in_at timestamptz;
ALTER TABLE tenant_settings ADD COLUMN note_kind text NOT NULL DEFAULT 'soap'
    CHECK (note_kind IN ('soap', 'draatt'));

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['transcripts', 'notes', 'retention_policies'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
                            USING (tenant_id = phivault_current_tenant())
                            WITH CHECK (tenant_id = phivault_current_tenant())', t);
    END LOOP;
END $$;
