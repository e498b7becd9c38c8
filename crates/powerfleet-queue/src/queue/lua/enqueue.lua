-- Enqueues jobs, idempotently per submission key. Each job goes to the jobs stream of its model
-- name (or the shared stream for a model reference), created with the workers' group if new.
-- KEYS[1] the set of model names that have a stream, KEYS[2] correlation set, KEYS[3] batch set (or a dummy
--   key), KEYS[4] submission hash (or a dummy key), KEYS[5] the correlation's tally, KEYS[6] the
--   batch's tally (or a dummy key), then per job: KEYS[7 + 2j] its hash, KEYS[8 + 2j] its stream.
-- A tally hash counts a batch's (or correlation's) jobs: `total`, `total:METHOD` and `m:MODEL`
-- here, `final`, `final:METHOD` and `status:STATUS` as they finish, so watching a batch reads one
-- hash.
-- ARGV[1] now_ms, ARGV[2] has_batch ('1'/'0'), ARGV[3] has_submission ('1'/'0'), ARGV[4] retention_s,
-- ARGV[5] the workers' group, then per job: index, job_id, spec_json, correlation_id, batch_id,
-- method, model, whether its stream is a model name's ('1'/'0').
-- Returns, per job, the job id it has (an earlier submission's id when the key was seen before).
local out = {}
local per = 8
local n = (#ARGV - 5) / per
local created = {}
for j = 0, n - 1 do
  local base = 6 + j * per
  local index, job_id, spec = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local existing = false
  if ARGV[3] == '1' then
    existing = redis.call('HGET', KEYS[4], 'job:' .. index)
  end
  if existing then
    out[#out + 1] = existing
  else
    local job, stream = KEYS[7 + 2 * j], KEYS[8 + 2 * j]
    if not created[stream] then
      created[stream] = true
      if redis.call('EXISTS', stream) == 0 then
        redis.call('XGROUP', 'CREATE', stream, ARGV[5], '0', 'MKSTREAM')
      end
      if ARGV[base + 7] == '1' then
        redis.call('SADD', KEYS[1], ARGV[base + 6])
      end
    end
    local entry = redis.call('XADD', stream, '*', 'job_id', job_id, 'spec', spec)
    redis.call('HSET', job, 'spec', spec, 'status', 'queued', 'fence', 0, 'deliveries', 0,
      'entry', entry, 'stream', stream, 'model', ARGV[base + 6],
      'correlation_id', ARGV[base + 3], 'batch_id', ARGV[base + 4],
      'method', ARGV[base + 5], 'submitted_at_ms', ARGV[1], 'updated_at_ms', ARGV[1], 'cancel', 0)
    redis.call('SADD', KEYS[2], job_id)
    redis.call('HINCRBY', KEYS[5], 'total', 1)
    redis.call('HINCRBY', KEYS[5], 'total:' .. ARGV[base + 5], 1)
    redis.call('HINCRBY', KEYS[5], 'm:' .. ARGV[base + 6], 1)
    if ARGV[2] == '1' then
      redis.call('SADD', KEYS[3], job_id)
      redis.call('HINCRBY', KEYS[6], 'total', 1)
      redis.call('HINCRBY', KEYS[6], 'total:' .. ARGV[base + 5], 1)
      redis.call('HINCRBY', KEYS[6], 'm:' .. ARGV[base + 6], 1)
    end
    if ARGV[3] == '1' then
      redis.call('HSET', KEYS[4], 'job:' .. index, job_id)
    end
    out[#out + 1] = job_id
  end
end
-- The sets of a correlation id and a batch live for the retention after their latest job was
-- enqueued or finished (finish.lua renews them), so nothing a submission creates stays for good.
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[5], ARGV[4])
if ARGV[2] == '1' then
  redis.call('EXPIRE', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[6], ARGV[4])
end
return out
