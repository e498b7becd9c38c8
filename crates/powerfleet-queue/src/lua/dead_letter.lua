-- Moves an entry that cannot be decoded to the dead-letter stream and acknowledges it. When the
-- entry names a job whose state still points at this entry, that job is marked dead with the
-- reason, so it never waits forever (a job written by a newer producer, for instance).
-- KEYS[1] stream, KEYS[2] dead-letter stream, KEYS[3] the named job's hash (or an unused key).
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] reason, ARGV[4] raw payload (json of the fields),
-- ARGV[5] now_ms, ARGV[6] retention_s.
redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2], 'reason', ARGV[3], 'payload', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local status = redis.call('HGET', KEYS[3], 'status')
if (status == 'queued' or status == 'running') and redis.call('HGET', KEYS[3], 'entry') == ARGV[2] then
  redis.call('HSET', KEYS[3], 'status', 'dead', 'error', ARGV[3], 'owner', '',
    'updated_at_ms', ARGV[5], 'finished_at_ms', ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[6])
end
return 1
