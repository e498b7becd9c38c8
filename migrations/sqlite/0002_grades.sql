-- Grades of benchmark jobs, SQLite dialect. Keep equal to ../postgres/0002_grades.sql.
-- NULL for jobs that are not graded (no benchmark reference, or not completed).
ALTER TABLE job_results ADD COLUMN grader TEXT;
ALTER TABLE job_results ADD COLUMN extracted TEXT;     -- the answer found in the completion
ALTER TABLE job_results ADD COLUMN correct BOOLEAN;    -- the grader's verdict
