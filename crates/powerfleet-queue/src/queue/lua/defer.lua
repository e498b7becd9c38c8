-- Puts a job back to wait for its model: it leaves the jobs stream and waits in the delayed set
-- until `due_ms`, when a worker's promote moves it back to the stream. The checkpoint stays, and
-- a wait is not a delivery: it does not count towards the dead-letter limit.
-- Two callers:
--   the job's owner (ARGV[1] its fence): its claim is undone (the fence moves on, the delivery
--   is taken back);
--   a worker that read the entry but did not claim it, because the job's model is down
--   (ARGV[1] empty): only a queued job whose current entry this is moves.
-- KEYS[1] job hash, KEYS[2] the jobs stream of its entry, KEYS[3] delayed set.
-- ARGV[1] lease (fence:token) or '', ARGV[2] group, ARGV[3] entry id, ARGV[4] now_ms, ARGV[5] job id,
-- ARGV[6] due_ms, ARGV[7] why it waits, ARGV[8] waiting since (ms since the epoch), or '' to
-- keep the job's own (now when it has none).
-- Uses ack_and_delete() from lag.lua, which is loaded before this script.
-- Returns 1 when deferred, 0 when not (fenced out, or not this entry's to move), 2 when the
-- owner must not defer because a cancellation was requested (it finishes the job instead). An
-- unclaimed entry of a job with a cancellation request is not moved: its claim cancels it.
local status = redis.call('HGET', KEYS[1], 'status')
local cancel = redis.call('HGET', KEYS[1], 'cancel') == '1'
if ARGV[1] ~= '' then
  if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] or status ~= 'running' then
    return 0
  end
  if cancel then
    return 2
  end
  redis.call('HINCRBY', KEYS[1], 'fence', 1)
  redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
else
  if status ~= 'queued' or redis.call('HGET', KEYS[1], 'entry') ~= ARGV[3] or cancel then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'owner', '', 'entry', '', 'updated_at_ms', ARGV[4],
  'waiting', ARGV[7], 'not_before_ms', ARGV[6])
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'waiting_since_ms', ARGV[8])
else
  redis.call('HSETNX', KEYS[1], 'waiting_since_ms', ARGV[4])
end
redis.call('HINCRBY', KEYS[1], 'waits', 1)
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
ack_and_delete(KEYS[2], ARGV[2], ARGV[3])
return 1
