-- Hands a job back to the queue at once: gives up the fencing token, enqueues the job again and
-- acknowledges the old entry. The checkpoint stays. A hand-back is not a failed delivery, so it
-- does not count towards the dead-letter limit. Two callers: a worker stopping gracefully (the
-- job goes back to its own stream), and a worker that took over a job of the shared stream whose
-- model name it does not map (the job goes to that name's stream, for the workers that map it).
-- KEYS[1] job hash, KEYS[2] the jobs stream of its entry, KEYS[3] the stream it goes to,
-- KEYS[4] the set of model names that have a stream.
-- ARGV[1] lease (fence:token), ARGV[2] group, ARGV[3] entry id, ARGV[4] now_ms, ARGV[5] job id,
-- ARGV[6] the model name whose stream KEYS[3] is, or '' (it is KEYS[2]).
-- Uses ack_and_delete() from lag.lua, which is loaded before this script.
-- Returns 1 when handed back, 0 when fenced out.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
if KEYS[3] ~= KEYS[2] and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[3], ARGV[2], '0', 'MKSTREAM')
end
if ARGV[6] ~= '' then
  redis.call('SADD', KEYS[4], ARGV[6])
end
local spec = redis.call('HGET', KEYS[1], 'spec')
local entry = redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[5], 'spec', spec)
redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'owner', '', 'entry', entry, 'stream', KEYS[3],
  'updated_at_ms', ARGV[4])
ack_and_delete(KEYS[2], ARGV[2], ARGV[3])
return 1
