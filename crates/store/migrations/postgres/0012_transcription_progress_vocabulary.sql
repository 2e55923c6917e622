-- Transcription progress and the tenant's vocabulary (PostgreSQL).
--
-- A running job records how far its step got, in milliseconds of audio done out of
-- the recording's total, so a 60-minute visit shows its progress in the job state.
-- Numbers only: nothing here is PHI. A new claim clears them.
--
-- A tenant's vocabulary is a list of terms (drug names, local places) that the Whisper
-- engine takes as its previous-text prompt, so that they come out spelled right. It is
-- configuration, not PHI: its API refuses anything but short word-like terms, and its
-- audit events record counts, never the terms.

ALTER TABLE jobs ADD COLUMN progress_done_ms bigint CHECK (progress_done_ms >= 0);
ALTER TABLE jobs ADD COLUMN progress_total_ms bigint CHECK (progress_total_ms >= 0);
ALTER TABLE jobs ADD CONSTRAINT jobs_progress_bounded
    CHECK ((progress_done_ms IS NULL) = (progress_total_ms IS NULL)
           AND (progress_done_ms IS NULL OR progress_done_ms <= progress_total_ms));

-- A JSON array of strings, checked by the application.
ALTER TABLE tenant_settings ADD COLUMN vocabulary text NOT NULL DEFAULT '[]'
    CHECK (length(vocabulary) <= 16384);
