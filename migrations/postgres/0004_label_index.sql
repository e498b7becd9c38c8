-- Reports select runs by label; PostgreSQL dialect. Keep equal to ../sqlite/0004_label_index.sql.
CREATE INDEX job_results_label ON job_results (label);
CREATE INDEX submissions_label ON submissions (label);
