-- Puts a queued job whose entry a worker read but will not run back on a jobs stream, as a new
-- entry at its end: the worker read more than it has room for, or the job (enqueued before jobs
-- were routed by model name) belongs on its model name's stream. Not a delivery, and the
-- checkpoint stays.
-- KEYS[1] job hash, KEYS[2] the stream it was read from, KEYS[3] the stream it goes to, KEYS[4]
-- the set of model names that have a stream.
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] job id, ARGV[4] now_ms, ARGV[5] the job's model,
-- ARGV[6] whether KEYS[3] is that model name's stream ('1'/'0').
-- Uses ack_and_delete() from lag.lua, which is loaded before this script.
-- Returns 1 when moved; 0 when the entry was not the queued job's current one (it is only
-- acknowledged then: the job is running, finished or waiting elsewhere).
local moved = 0
if redis.call('HGET', KEYS[1], 'status') == 'queued' and redis.call('HGET', KEYS[1], 'entry') == ARGV[2] then
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[3], ARGV[1], '0', 'MKSTREAM')
  end
  if ARGV[6] == '1' then
    redis.call('SADD', KEYS[4], ARGV[5])
  end
  local spec = redis.call('HGET', KEYS[1], 'spec')
  local entry = redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[3], 'spec', spec)
  redis.call('HSET', KEYS[1], 'entry', entry, 'stream', KEYS[3], 'model', ARGV[5],
    'updated_at_ms', ARGV[4])
  moved = 1
end
ack_and_delete(KEYS[2], ARGV[1], ARGV[2])
return moved
