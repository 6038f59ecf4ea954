-- A new connection: the client address's connection rate, then the user's open connections.
-- KEYS: address rate key, user connections key (ignored for anonymous connections)
-- ARGV: rate limit, rate period ms, socket id, max connections per user, ttl ms, signed in ('1'/'0')
local now = now_ms()
local bad = rate_check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if bad then return bad end
if ARGV[6] == '1' then
  local ttl = tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {'err', 'rate_limited', ttl} end
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {'ok'}
