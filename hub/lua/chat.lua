-- One accepted chat message: checks, counters, recent buffer, outbox and broadcast together.
-- KEYS: stream hash, rate key, recent list, outbox, channel
-- ARGV: rate limit, rate period ms, recent size, message json, pub/sub json
local bad = live_check(KEYS[1])
if bad then return bad end
local now = now_ms()
bad = rate_check(KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
if bad then return bad end
redis.call('HINCRBY', KEYS[1], 'message_count', 1)
redis.call('RPUSH', KEYS[3], ARGV[4])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
redis.call('XADD', KEYS[4], '*', 't', 'message', 'd', ARGV[4])
redis.call('PUBLISH', KEYS[5], ARGV[5])
return {'ok'}
