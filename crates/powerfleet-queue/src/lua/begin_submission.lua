-- Records the batch and correlation ids of a submission key, or returns those recorded before.
-- KEYS[1] submission hash. ARGV[1] batch_id, ARGV[2] correlation_id, ARGV[3] retention_s.
redis.call('HSETNX', KEYS[1], 'batch_id', ARGV[1])
redis.call('HSETNX', KEYS[1], 'correlation_id', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return redis.call('HMGET', KEYS[1], 'batch_id', 'correlation_id')
