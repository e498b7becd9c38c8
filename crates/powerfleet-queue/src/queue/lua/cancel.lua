-- Cancels a job. A queued job is finished at once with the given result; a running one is flagged,
-- and its worker stops it between MCMC steps.
-- KEYS[1] job hash, KEYS[2] results stream, KEYS[3] checkpoint key, KEYS[4] the job's jobs stream.
-- ARGV[1] now_ms, ARGV[2] job id, ARGV[3] result json for a queued job, ARGV[4] retention_s,
-- ARGV[5] workers' group, ARGV[6] has_batch ('1'/'0'), ARGV[7] the job's method.
-- KEYS[5] the correlation's tally, KEYS[6] the batch's tally (or an unused key).
-- Uses tally() from tally.lua and keep_lag() from lag.lua, which are loaded before this script.
-- Returns 'cancelled' | 'requested' | 'final:<status>' | 'missing'.

local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return 'missing'
end
if status == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancel', 1, 'result', ARGV[3],
    'updated_at_ms', ARGV[1], 'finished_at_ms', ARGV[1], 'error', 'cancelled')
  redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[2], 'result', ARGV[3])
  redis.call('DEL', KEYS[3])
  -- Its entry is not needed any more: no worker reads it after the job's state has expired.
  -- A job waiting for its model has no entry (it sits in the delayed set, which drops it).
  local entry = redis.call('HGET', KEYS[1], 'entry')
  if entry and entry ~= '' then
    redis.call('XACK', KEYS[4], ARGV[5], entry)
    redis.call('XDEL', KEYS[4], entry)
    -- Redis cannot count the group's lag past a deleted entry it never delivered (it would
    -- report nil, or the cancelled job still): keep_lag() makes it the jobs still queued again,
    -- which autoscalers read.
    keep_lag(KEYS[4], ARGV[5])
  end
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  tally(KEYS[5], KEYS[6], ARGV[6], 'cancelled', ARGV[7], ARGV[4])
  return 'cancelled'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', 1, 'updated_at_ms', ARGV[1])
  return 'requested'
end
return 'final:' .. status
