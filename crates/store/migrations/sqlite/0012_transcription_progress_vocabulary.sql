-- Transcription progress and the tenant's vocabulary (SQLite).
--
-- A running job records how far its step got, in milliseconds of audio done out of
-- the recording's total, so a 60-minute visit shows its progress in the job state.
-- Numbers only: nothing here is PHI. A new claim clears them.
--
-- A tenant's vocabulary is a list of terms (drug names, local places) that the Whisper
-- engine takes as its previous-text prompt, so that they come out spelled right. It is
-- configuration, not PHI: its API refuses anything but short word-like terms, and its
-- audit events record counts, never the terms.

-- SQLite cannot add a table constraint to an existing table; the column checks and
-- the application keep done <= total.
ALTER TABLE jobs ADD COLUMN progress_done_ms INTEGER CHECK (progress_done_ms >= 0);
ALTER TABLE jobs ADD COLUMN progress_total_ms INTEGER CHECK (progress_total_ms >= 0);

-- A JSON array of strings, checked by the application.
ALTER TABLE tenant_settings ADD COLUMN vocabulary TEXT NOT NULL DEFAULT '[]'
    CHECK (length(vocabulary) <= 16384);
