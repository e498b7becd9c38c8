-- Moves an entry that cannot be decoded to the dead-letter stream and acknowledges it.
-- KEYS[1] jobs stream, KEYS[2] dead-letter stream.
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] reason, ARGV[4] raw payload (json of the fields).
redis.call('XADD', KEYS[2], '*', 'entry', ARGV[2], 'reason', ARGV[3], 'payload', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
