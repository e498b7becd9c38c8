-- Results store, PostgreSQL dialect. Keep the columns equal to ../sqlite/0001_results.sql (a unit test
-- of powerfleet-store compares them).

-- One row per finished job. result_json holds the whole JobResult; the other columns are for queries.
CREATE TABLE job_results (
    job_id           TEXT PRIMARY KEY NOT NULL,
    batch_id         TEXT,
    correlation_id   TEXT NOT NULL,
    problem_id       TEXT,
    model            TEXT NOT NULL,
    method           TEXT NOT NULL,
    seed             BIGINT NOT NULL,            -- u64 bit-cast to i64
    stream           BIGINT NOT NULL,            -- u64 bit-cast to i64
    status           TEXT NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled', 'dead')),
    tokens           TEXT NOT NULL,              -- JSON array of token ids
    text             TEXT,
    log_p            DOUBLE PRECISION,
    ends_with_eos    BOOLEAN NOT NULL,
    proposals        BIGINT NOT NULL,
    acceptances      BIGINT NOT NULL,
    tokens_generated BIGINT NOT NULL,
    model_calls      BIGINT NOT NULL,
    final_len        BIGINT NOT NULL,
    cost_multiplier  DOUBLE PRECISION,
    attempts         BIGINT NOT NULL,
    error            TEXT,
    submitted_at_ms  BIGINT NOT NULL,
    started_at_ms    BIGINT,
    finished_at_ms   BIGINT NOT NULL,
    latency_ms       BIGINT NOT NULL,            -- finished_at_ms - submitted_at_ms
    stats_json       TEXT NOT NULL,              -- the full ChainStats
    result_json      TEXT NOT NULL               -- the full JobResult
);

CREATE INDEX job_results_batch_id ON job_results (batch_id);
CREATE INDEX job_results_correlation_id ON job_results (correlation_id);

-- Running counts and sums per batch and method, updated in the transaction that inserts a job row.
CREATE TABLE batch_aggregates (
    batch_id                   TEXT NOT NULL,
    method                     TEXT NOT NULL,
    jobs                       BIGINT NOT NULL,
    completed                  BIGINT NOT NULL,
    failed                     BIGINT NOT NULL,
    cancelled                  BIGINT NOT NULL,
    dead                       BIGINT NOT NULL,
    proposals                  BIGINT NOT NULL,
    acceptances                BIGINT NOT NULL,
    tokens_generated           BIGINT NOT NULL,  -- over all jobs
    completed_tokens_generated BIGINT NOT NULL,  -- over completed jobs (numerator of the cost multiplier)
    final_tokens               BIGINT NOT NULL,  -- completion tokens of completed jobs
    model_calls                BIGINT NOT NULL,
    first_submitted_at_ms      BIGINT NOT NULL,
    last_finished_at_ms        BIGINT NOT NULL,
    PRIMARY KEY (batch_id, method)
);
