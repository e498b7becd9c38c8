-- Each result's manifest and each batch's submission, SQLite dialect. Keep equal to
-- ../postgres/0003_manifest.sql.
-- The settings a result ran with: the validated sampler configuration in full (JSON of a
-- SamplerConfig with every default resolved), the key settings as columns for queries, the
-- submission's label and the powerfleet version that wrote it. NULL for rows written before.
ALTER TABLE job_results ADD COLUMN config_json TEXT;
ALTER TABLE job_results ADD COLUMN n_mcmc BIGINT;
ALTER TABLE job_results ADD COLUMN block_size BIGINT;
ALTER TABLE job_results ADD COLUMN max_new_tokens BIGINT;
ALTER TABLE job_results ADD COLUMN label TEXT;
ALTER TABLE job_results ADD COLUMN version TEXT;

-- One row per submitted batch: how many jobs it scheduled, so a report knows what is missing
-- after Redis has forgotten the batch. Written by the collectors from the submissions stream.
CREATE TABLE submissions (
    batch_id        TEXT PRIMARY KEY NOT NULL,
    correlation_id  TEXT NOT NULL,
    label           TEXT,
    models          TEXT NOT NULL,   -- JSON array of model names
    methods         TEXT NOT NULL,   -- JSON array of method names
    scheduled       BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX submissions_correlation_id ON submissions (correlation_id);
