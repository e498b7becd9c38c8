-- Keeps a lease alive and records progress, if the caller still holds the fencing token.
-- KEYS[1] job hash, KEYS[2] jobs stream.
-- ARGV[1] lease (fence:token), ARGV[2] group, ARGV[3] consumer, ARGV[4] entry id, ARGV[5] now_ms,
-- ARGV[6] progress json.
-- Returns {1, cancel} while owned, {0} once the lease is lost, {-1} when the job's state is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return {0}
end
redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID')
redis.call('HSET', KEYS[1], 'updated_at_ms', ARGV[5], 'progress', ARGV[6])
return {1, redis.call('HGET', KEYS[1], 'cancel')}
