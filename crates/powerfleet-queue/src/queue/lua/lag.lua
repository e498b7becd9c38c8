-- Shared by every script that deletes entries of a jobs stream, which are loaded after it (see
-- `Scripts::new`): keeps the lag Redis reports for a consumer group (XINFO GROUPS, what
-- autoscalers such as KEDA read) equal to the entries never delivered to it, after an entry was
-- deleted at or after the group's last-delivered id: one it had not read yet (a cancelled job),
-- or the newest it had delivered (finished, handed back, put back to wait, moved or
-- dead-lettered while older ones still run and newer ones are queued).
--
-- Redis counts a group's lag as entries-added minus the group's entries-read, but only while no
-- deleted entry lies at or after the group's last-delivered id, which it tracks by one mark, the
-- stream's max-deleted-entry-id. Past such a deletion it estimates, and replies nil or a wrong
-- figure (nil reads as 0 to KEDA, which then never wakes the workers of a model). So after such a
-- deletion the group's entries-read is set to the entries added minus the ones still to deliver,
-- which counts every deleted one as read, and the mark moves back to before the group's
-- last-delivered id: the mark now says what the counter already accounts for, and reads go on
-- counting from the true figure.
--
-- Entries acknowledged are deleted from jobs streams, so the stream holds only the entries pending
-- (delivered, not acknowledged) and the ones never delivered: the latter are its length minus the
-- group's pending count, as `Queue::backlog_by_stream` counts them. Redis before 7.0 has no lag
-- and none of these counters: nothing is done there.

-- A reply of field-value pairs as a table.
local function pairs_of(reply)
  local t = {}
  for i = 1, #reply, 2 do
    t[reply[i]] = reply[i + 1]
  end
  return t
end

-- Compares two decimal numbers of any length given as text: -1, 0 or 1.
local function compare_decimal(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end

-- Compares two stream ids ('MS-SEQ'): -1, 0 or 1.
local function compare_id(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  local c = compare_decimal(a_ms, b_ms)
  if c ~= 0 then
    return c
  end
  return compare_decimal(a_seq, b_seq)
end

-- An id below `id`, other than 0-0 (which XSETID would ignore): below every entry when `id` is
-- 0-0 (a group that never read anything), as ids made by XADD '*' are times in ms.
local function id_below(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq ~= '0' then
    return ms .. '-0'
  end
  if compare_decimal(ms, '1') <= 0 then
    return '0-1'
  end
  return string.format('%.0f', tonumber(ms) - 1) .. '-0'
end

local function keep_lag(stream, group)
  local info = redis.pcall('XINFO', 'STREAM', stream)
  if type(info) ~= 'table' or info.err then
    return
  end
  local s = pairs_of(info)
  if s['entries-added'] == nil or s['max-deleted-entry-id'] == nil then
    return
  end
  local g = nil
  for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local f = pairs_of(raw)
    if f['name'] == group then
      g = f
      break
    end
  end
  if not g then
    return
  end
  local last = g['last-delivered-id']
  local undelivered = math.max(s['length'] - g['pending'], 0)
  local deleted = s['max-deleted-entry-id']
  if deleted ~= '0-0' and compare_id(deleted, last) >= 0 then
    redis.call('XSETID', stream, s['last-generated-id'], 'MAXDELETEDID', id_below(last))
  end
  redis.call('XGROUP', 'SETID', stream, group, last, 'ENTRIESREAD',
    math.max(s['entries-added'] - undelivered, 0))
end

-- Acknowledges and deletes a delivered entry of a jobs stream, then keeps the group's lag true
-- when the entry was the group's last delivered one: Redis cannot count the lag past a deleted
-- entry there, and would report nil until the group reads again. Deletions of older entries
-- leave the count valid, and cost one XINFO GROUPS.
local function ack_and_delete(stream, group, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) ~= 'table' or groups.err then
    return
  end
  for _, raw in ipairs(groups) do
    local g = pairs_of(raw)
    if g['name'] == group then
      if compare_id(id, g['last-delivered-id']) >= 0 then
        keep_lag(stream, group)
      end
      return
    end
  end
end
