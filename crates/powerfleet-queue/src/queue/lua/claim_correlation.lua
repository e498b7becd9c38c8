-- Claims a correlation id for the one request that creates its jobs: the check that the id is
-- new and the claim are one step, so of two concurrent requests only one gets it.
-- KEYS[1] the claim key, KEYS[2] the correlation's tally, KEYS[3] the correlation's set.
-- ARGV[1] now_ms (the claim's value), ARGV[2] retention_s.
-- Returns 1 when claimed, 0 when the id has jobs or another claim.
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return 1
end
return 0
