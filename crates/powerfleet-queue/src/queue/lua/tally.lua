-- Shared by finish.lua, cancel.lua and dead_letter.lua, which are loaded after it (see
-- `Scripts::new`): counts one job as final in its correlation's and batch's tallies.
local function tally(corr_key, batch_key, has_batch, status, method, retention)
  local keys = {corr_key}
  if has_batch == '1' then
    keys[2] = batch_key
  end
  for _, k in ipairs(keys) do
    redis.call('HINCRBY', k, 'final', 1)
    redis.call('HINCRBY', k, 'final:' .. method, 1)
    redis.call('HINCRBY', k, 'status:' .. status, 1)
    redis.call('EXPIRE', k, retention)
  end
end
