-- One accepted chat message or trade alert: checks, counters, recent buffer, outbox and
-- broadcast together.
-- KEYS: stream hash, rate key, recent list, outbox, channel, sanctions, moderators, slow-mode key
-- ARGV: rate limit, privileged rate limit, rate period ms, recent size, message json,
--       pub/sub json, user id, admin ('1'/'0'), kind ('chat' | 'alert'), message id
-- Returns {'ok'}, an error, or {'stale', cleared_before} when the message's id is older than
-- the last chat clear (the caller retries with a newer id).
local h = redis.call('HMGET', KEYS[1], 'status', 'streamer_id', 'slow_mode', 'cleared_before')
if not h[1] then return {'err', 'not_found'} end
if h[1] ~= 'LIVE' then return {'err', 'stream_not_live'} end
if h[4] and ARGV[10] <= h[4] then return {'stale', h[4]} end
local user, kind = ARGV[7], ARGV[9]
local now = now_ms()
local role = role_of(h[2], KEYS[7], user, ARGV[8])
if kind == 'alert' and role ~= 'streamer' then return {'err', 'forbidden'} end
local bad
if role ~= 'streamer' then
  bad = sanction_check(KEYS[6], user, now)
  if bad then return bad end
end
local slow = tonumber(h[3] or '0') or 0
if role then slow = 0 end
if slow > 0 then
  local wait = redis.call('PTTL', KEYS[8])
  if wait > 0 then return {'err', 'slow_mode', wait} end
end
local limit = role and tonumber(ARGV[2]) or tonumber(ARGV[1])
bad = rate_check(KEYS[2], limit, tonumber(ARGV[3]), now)
if bad then return bad end
if slow > 0 then redis.call('SET', KEYS[8], '1', 'PX', slow * 1000) end
redis.call('HINCRBY', KEYS[1], 'message_count', 1)
redis.call('RPUSH', KEYS[3], ARGV[5])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
redis.call('XADD', KEYS[4], '*', 't', 'message', 'd', ARGV[5])
redis.call('PUBLISH', KEYS[5], ARGV[6])
return {'ok'}
