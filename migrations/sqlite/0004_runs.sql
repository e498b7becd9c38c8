-- Runs selected by label, and what each submission asked for; SQLite dialect. Keep equal to ../postgres/0004_runs.sql.
CREATE INDEX job_results_label ON job_results (label);
CREATE INDEX submissions_label ON submissions (label);

-- What each submission asked for (JSON of a SubmissionRequest: settings, counts, the jobs'
-- fingerprint; no secrets, no problem text). NULL for submissions recorded before.
ALTER TABLE submissions ADD COLUMN request_json TEXT;
