-- Grades of benchmark jobs, PostgreSQL dialect. Keep equal to ../sqlite/0002_grades.sql.
-- NULL for jobs that are not graded (no benchmark reference, or not completed).
ALTER TABLE job_results ADD COLUMN grader TEXT;
ALTER TABLE job_results ADD COLUMN extracted TEXT;     -- the answer found in the completion
ALTER TABLE job_results ADD COLUMN correct BOOLEAN;    -- the grader's verdict
