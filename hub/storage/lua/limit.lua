-- One rate limit of a user (a sliding window in a sorted set), counted on its own: a join's or a tip's,
-- when the user's rate state and the stream are in different shards.
-- KEYS: the rate key
-- ARGV: limit, period ms
local rate_key = KEYS[1]
local rate_limit, period_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local bad = rate_check(rate_key, rate_limit, period_ms, now_ms())
if bad then return bad end
return {'ok'}
