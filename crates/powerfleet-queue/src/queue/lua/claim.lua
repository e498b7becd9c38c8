-- Claims a delivered stream entry for a worker: takes a new fencing token.
-- KEYS[1] job hash, KEYS[2] checkpoint key, KEYS[3] the jobs stream it was read from, KEYS[4] the
-- job's stored prompt (or an unused key), which lives on for the retention from every claim.
-- An entry acknowledged here is deleted too, as everywhere: a jobs stream holds only the entries
-- still to run or running, so its length is the work left (what autoscaling reads).
-- ARGV[1] entry id, ARGV[2] consumer, ARGV[3] now_ms, ARGV[4] group, ARGV[5] retention_s,
-- ARGV[6] a token unique to this claim.
-- The claim's lease is `fence:token`, which every fenced script compares: the fence alone could
-- repeat when a failover loses an increment that a worker already holds, the token cannot.
-- Uses ack_and_delete() from lag.lua, which is loaded before this script.
-- Returns {'missing'} | {'final', status} | {'stale'} |
--   {'ok', fence, deliveries, cancel, checkpoint or false, started_at_ms, waiting_since_ms or false,
--    waits or false, the stored prompt or false}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  -- The job's state vanished (deleted or evicted): its checkpoint can never be resumed, so it
  -- expires like a finished job's keys instead of staying for good.
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  return {'missing'}
end
if status ~= 'queued' and status ~= 'running' then
  ack_and_delete(KEYS[3], ARGV[4], ARGV[1])
  return {'final', status}
end
if redis.call('HGET', KEYS[1], 'entry') ~= ARGV[1] then
  -- An older entry of a job that was handed back and enqueued again.
  ack_and_delete(KEYS[3], ARGV[4], ARGV[1])
  return {'stale'}
end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'lease', fence .. ':' .. ARGV[6])
local deliveries = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'owner', ARGV[2], 'updated_at_ms', ARGV[3])
redis.call('HSETNX', KEYS[1], 'started_at_ms', ARGV[3])
local cancel = redis.call('HGET', KEYS[1], 'cancel')
local checkpoint = redis.call('GET', KEYS[2])
redis.call('HDEL', KEYS[1], 'waiting', 'not_before_ms')
local prompt = redis.call('GET', KEYS[4])
if prompt then
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
return {'ok', fence, deliveries, cancel, checkpoint, redis.call('HGET', KEYS[1], 'started_at_ms'),
  redis.call('HGET', KEYS[1], 'waiting_since_ms'), redis.call('HGET', KEYS[1], 'waits'), prompt}
