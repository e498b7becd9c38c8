-- Reports select runs by label; SQLite dialect. Keep equal to ../postgres/0004_label_index.sql.
CREATE INDEX job_results_label ON job_results (label);
CREATE INDEX submissions_label ON submissions (label);
