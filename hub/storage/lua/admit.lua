-- A new connection: the client address's connection rate, then the open connections of the
-- address and of the user, each a sorted set of socket ids scored by expiry.
-- KEYS: the address's rate key (when checked), then the sets that count the connection
-- ARGV: rate limit, rate period ms, socket id, ttl ms, check the rate ('1'/'0'), then the most
--       open connections each set allows, one per set
local now = now_ms()
local sid, ttl, first = ARGV[3], tonumber(ARGV[4]), 1
if ARGV[5] == '1' then
  local bad = rate_check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
  if bad then return bad end
  first = 2
end
local holders = {}
for i = first, #KEYS do holders[#holders + 1] = {KEYS[i], tonumber(ARGV[5 + i - first + 1])} end
for _, holder in ipairs(holders) do
  redis.call('ZREMRANGEBYSCORE', holder[1], '-inf', now)
  if redis.call('ZCARD', holder[1]) >= holder[2] then return {'err', 'rate_limited', ttl} end
end
for _, holder in ipairs(holders) do
  redis.call('ZADD', holder[1], now + ttl, sid)
  redis.call('PEXPIRE', holder[1], ttl)
end
return {'ok'}
