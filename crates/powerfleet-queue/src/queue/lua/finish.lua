-- Publishes a job's final result and acknowledges its entry, if the caller holds the fencing token.
-- KEYS[1] job hash, KEYS[2] checkpoint key, KEYS[3] the jobs stream of its entry, KEYS[4] results stream,
-- KEYS[5] dead-letter stream, KEYS[6] the job's correlation set, KEYS[7] its batch set (or an unused
-- key).
-- ARGV[1] lease (fence:token), ARGV[2] group, ARGV[3] entry id, ARGV[4] now_ms, ARGV[5] status, ARGV[6] job id,
-- ARGV[7] result json, ARGV[8] dead-letter reason ('' unless status is dead), ARGV[9] retention_s,
-- ARGV[10] has_batch ('1'/'0'), ARGV[11] the job's method.
-- KEYS[8] the correlation's tally, KEYS[9] the batch's tally (or an unused key), KEYS[10] the
-- stored prompt the result references (or an unused key): it lives on for the retention, so the
-- collector can resolve it.
-- Uses tally() from tally.lua and ack_and_delete() from lag.lua, which are loaded before this
-- script.
-- Returns 1 when published, 0 when fenced out or already final.

if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[5], 'result', ARGV[7], 'owner', '',
  'updated_at_ms', ARGV[4], 'finished_at_ms', ARGV[4])
redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[6], 'result', ARGV[7])
if ARGV[5] == 'dead' then
  local oldest = tonumber(ARGV[4]) - tonumber(ARGV[9]) * 1000
  redis.call('XADD', KEYS[5], 'MINID', '~', math.max(oldest, 0), '*', 'job_id', ARGV[6],
    'entry', ARGV[3], 'reason', ARGV[8])
  redis.call('HSET', KEYS[1], 'error', ARGV[8])
end
ack_and_delete(KEYS[3], ARGV[2], ARGV[3])
redis.call('DEL', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[9])
-- The job's sets live for the retention after its batch's latest finished job.
redis.call('EXPIRE', KEYS[6], ARGV[9])
redis.call('EXPIRE', KEYS[7], ARGV[9])
tally(KEYS[8], KEYS[9], ARGV[10], ARGV[5], ARGV[11], ARGV[9])
redis.call('EXPIRE', KEYS[10], ARGV[9])
return 1
