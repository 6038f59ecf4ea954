-- A new connection: the client address's connection rate, then the open connections of the
-- address and of the user, each a sorted set of socket ids scored by expiry.
-- KEYS: the address's rate key (when checked), then the sets that count the connection
-- ARGV: rate limit, rate period ms, socket id, ttl ms, check the rate ('1'/'0'), then the most
--       open connections each set allows, one per set
local rate_limit, period_ms, sid, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local check_rate = ARGV[5] == '1'
local most = slice(ARGV, 6)
local rate_key = check_rate and KEYS[1] or nil
local holder_keys = slice(KEYS, check_rate and 2 or 1)
local now = now_ms()
if check_rate then
  local bad = rate_check(rate_key, rate_limit, period_ms, now)
  if bad then return bad end
end
for i, holder in ipairs(holder_keys) do
  redis.call('ZREMRANGEBYSCORE', holder, '-inf', now)
  if redis.call('ZCARD', holder) >= tonumber(most[i]) then return fail('rate_limited', ttl) end
end
for _, holder in ipairs(holder_keys) do
  redis.call('ZADD', holder, now + ttl, sid)
  redis.call('PEXPIRE', holder, ttl)
end
return {'ok'}
