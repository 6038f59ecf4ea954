-- A new connection: the client address's connection rate, then the open connections of the
-- address and of the user, each a sorted set of socket ids scored by expiry.
-- KEYS: address rate key, address connections key, user connections key (unused if anonymous)
-- ARGV: rate limit, rate period ms, socket id, max per address, max per user, ttl ms, signed in ('1'/'0')
local now = now_ms()
local bad = rate_check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if bad then return bad end
local sid, ttl = ARGV[3], tonumber(ARGV[6])
local holders = {{KEYS[2], tonumber(ARGV[4])}}
if ARGV[7] == '1' then holders[2] = {KEYS[3], tonumber(ARGV[5])} end
for _, holder in ipairs(holders) do
  redis.call('ZREMRANGEBYSCORE', holder[1], '-inf', now)
  if redis.call('ZCARD', holder[1]) >= holder[2] then return {'err', 'rate_limited', ttl} end
end
for _, holder in ipairs(holders) do
  redis.call('ZADD', holder[1], now + ttl, sid)
  redis.call('PEXPIRE', holder[1], ttl)
end
return {'ok'}
