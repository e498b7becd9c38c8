-- Records the batch and correlation ids of a submission key, with the fingerprint of the request,
-- or returns those recorded before (the caller refuses a different request under the same key).
-- KEYS[1] submission hash. ARGV[1] batch_id, ARGV[2] correlation_id, ARGV[3] retention_s,
-- ARGV[4] the request's fingerprint.
redis.call('HSETNX', KEYS[1], 'batch_id', ARGV[1])
redis.call('HSETNX', KEYS[1], 'correlation_id', ARGV[2])
redis.call('HSETNX', KEYS[1], 'fingerprint', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HMGET', KEYS[1], 'batch_id', 'correlation_id', 'fingerprint')
