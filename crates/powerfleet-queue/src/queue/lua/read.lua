-- Reads up to ARGV[3] new entries for a worker from its jobs streams, taking them from the
-- streams in the order given (the caller rotates it, so no model's jobs starve another's) and
-- never more than asked for: one round trip whatever the number of streams. A stream whose group
-- is missing (a new model name, or a Redis that lost its data) gets it.
-- KEYS: the jobs streams. ARGV[1] group, ARGV[2] consumer, ARGV[3] count.
-- Returns {entries, created}: the entries in XREADGROUP's reply shape
-- ({{stream, {{id, {field, value, ...}}, ...}}, ...}), and the streams whose group it created.
local out = {}
local created = {}
local left = tonumber(ARGV[3])
for _, stream in ipairs(KEYS) do
  if left <= 0 then
    break
  end
  local reply = redis.pcall('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left,
    'STREAMS', stream, '>')
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'NOGROUP') then
      redis.call('XGROUP', 'CREATE', stream, ARGV[1], '0', 'MKSTREAM')
      created[#created + 1] = stream
      reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left,
        'STREAMS', stream, '>')
    else
      return redis.error_reply(reply.err)
    end
  end
  if reply then
    for _, s in ipairs(reply) do
      out[#out + 1] = s
      left = left - #s[2]
    end
  end
end
return {out, created}
