-- Extend this worker's connections in the sets that count them (per address, per user).
-- KEYS: the sets, one per connection (repeats allowed)
-- ARGV: ttl ms, then the socket ids, one per key
local holder_keys = KEYS
local ttl = tonumber(ARGV[1])
local sids = slice(ARGV, 2)
local expiry = now_ms() + ttl
for i, holder in ipairs(holder_keys) do
  redis.call('ZADD', holder, 'XX', expiry, sids[i])
  redis.call('PEXPIRE', holder, ttl)
end
return {'ok'}
