-- Extend this worker's connections in the sets that count them (per address, per user).
-- ARGV: ttl ms, then (holder key, socket id) pairs
local ttl = tonumber(ARGV[1])
local expiry = now_ms() + ttl
for i = 2, #ARGV, 2 do
  redis.call('ZADD', ARGV[i], 'XX', expiry, ARGV[i + 1])
  redis.call('PEXPIRE', ARGV[i], ttl)
end
return {'ok'}
