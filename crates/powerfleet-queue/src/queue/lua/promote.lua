-- Moves one job whose wait is over from the delayed set back to the jobs stream. A job cancelled
-- or finished meanwhile only leaves the set. Workers find due jobs with ZRANGEBYSCORE and call
-- this for each; several workers racing move a job once.
-- KEYS[1] delayed set, KEYS[2] the job's jobs stream (its hash's `stream`), KEYS[3] job hash.
-- ARGV[1] now_ms, ARGV[2] job id.
-- Returns 1 when moved, 0 otherwise.
local due = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not due or tonumber(due) > tonumber(ARGV[1]) then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[2])
if redis.call('HGET', KEYS[3], 'status') ~= 'queued' or redis.call('HGET', KEYS[3], 'entry') ~= '' then
  return 0
end
local spec = redis.call('HGET', KEYS[3], 'spec')
local entry = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[2], 'spec', spec)
redis.call('HSET', KEYS[3], 'entry', entry, 'updated_at_ms', ARGV[1])
return 1
