-- Keeps a lease alive and records progress, and stores a chain checkpoint when one is given, if
-- the caller still holds the fencing token.
-- KEYS[1] job hash, KEYS[2] the jobs stream of its entry, KEYS[3] checkpoint key (with a checkpoint).
-- ARGV[1] lease (fence:token), ARGV[2] group, ARGV[3] consumer, ARGV[4] entry id, ARGV[5] now_ms,
-- ARGV[6] progress json, ARGV[7] checkpoint (optional).
-- Returns {1, cancel} while owned, {0} once the lease is lost, {-1} when the job's state is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return {0}
end
if ARGV[7] then
  redis.call('SET', KEYS[3], ARGV[7])
end
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
redis.call('HSET', KEYS[1], 'updated_at_ms', ARGV[5], 'progress', ARGV[6])
if ARGV[7] then
  -- Progress ends a wait for the model: the operator's patience counts from the next one, and
  -- its delays start short again. (Workers write a checkpoint only when the chain has moved on.)
  redis.call('HDEL', KEYS[1], 'waiting_since_ms', 'waits')
end
return {1, redis.call('HGET', KEYS[1], 'cancel')}
