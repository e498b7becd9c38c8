-- Hands a job back to the queue at once (graceful shutdown): gives up the fencing token, enqueues
-- the job again and acknowledges the old entry. The checkpoint stays. A hand-back is not a failed
-- delivery, so it does not count towards the dead-letter limit.
-- KEYS[1] job hash, KEYS[2] the jobs stream of its entry, where it goes back.
-- ARGV[1] lease (fence:token), ARGV[2] group, ARGV[3] entry id, ARGV[4] now_ms, ARGV[5] job id.
-- Returns 1 when handed back, 0 when fenced out.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
local spec = redis.call('HGET', KEYS[1], 'spec')
local entry = redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[5], 'spec', spec)
redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'owner', '', 'entry', entry, 'updated_at_ms', ARGV[4])
redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
return 1
