-- Uses tally() from tally.lua and ack_and_delete() from lag.lua, which are loaded before this
-- script.
-- Moves an entry that cannot be decoded to the dead-letter stream and acknowledges it. When the
-- entry names a job whose state still points at this entry, that job is marked dead with the
-- reason, so it never waits forever (a job written by a newer producer, for instance), and its
-- dead result (when the caller could make one) is published for the collectors. A job whose state
-- is gone gets its dead result published too: every job ends in the results database.
-- KEYS[1] stream, KEYS[2] dead-letter stream, KEYS[3] the named job's hash (or an unused key),
-- KEYS[4] results stream, KEYS[5] the named job's checkpoint key (or an unused key).
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] reason, ARGV[4] raw payload (json of the fields),
-- ARGV[5] now_ms, ARGV[6] retention_s, ARGV[7] the job's dead result json ('' if none),
-- ARGV[8] the named job's id ('' if none), ARGV[9] whether the job's tallies are known ('1'/'0'),
-- ARGV[10] has_batch ('1'/'0'), ARGV[11] the job's method.
-- KEYS[6] the job's correlation tally, KEYS[7] its batch tally (or unused keys).
-- Dead letters older than the retention are trimmed as new ones arrive.

local oldest = tonumber(ARGV[5]) - tonumber(ARGV[6]) * 1000
redis.call('XADD', KEYS[2], 'MINID', '~', math.max(oldest, 0), '*', 'entry', ARGV[2],
  'reason', ARGV[3], 'payload', ARGV[4])
if KEYS[1] == KEYS[4] then
  -- The results stream: its collectors' lag is nobody's scaling signal.
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
else
  ack_and_delete(KEYS[1], ARGV[1], ARGV[2])
end
local status = redis.call('HGET', KEYS[3], 'status')
if (status == 'queued' or status == 'running') and redis.call('HGET', KEYS[3], 'entry') == ARGV[2] then
  redis.call('HSET', KEYS[3], 'status', 'dead', 'error', ARGV[3], 'owner', '',
    'updated_at_ms', ARGV[5], 'finished_at_ms', ARGV[5])
  if ARGV[7] ~= '' then
    redis.call('HSET', KEYS[3], 'result', ARGV[7])
    redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[8], 'result', ARGV[7])
  end
  redis.call('EXPIRE', KEYS[3], ARGV[6])
  redis.call('DEL', KEYS[5])
  if ARGV[9] == '1' then
    tally(KEYS[6], KEYS[7], ARGV[10], 'dead', ARGV[11], ARGV[6])
  end
elseif not status then
  if ARGV[7] ~= '' then
    redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[8], 'result', ARGV[7])
    if ARGV[9] == '1' then
      tally(KEYS[6], KEYS[7], ARGV[10], 'dead', ARGV[11], ARGV[6])
    end
  end
  -- Nobody can resume the checkpoint of a job whose state is gone: it expires.
  redis.call('EXPIRE', KEYS[5], ARGV[6])
end
return 1
