-- One accepted tip: idempotency, checks, money counters (cents), the TIP chat message,
-- outbox records and both broadcasts together.
-- KEYS: stream hash, tip rate, idempotency key, recent set, unflushed set, sanctions, outbox,
--       room channel, idle index
-- ARGV: rate limit, rate period ms, recent size, idempotency ttl s, user id, TIP message id,
--       amount cents, fee cents, has idempotency key ('1'/'0'), count the tip rate here
--       ('1'/'0': else the caller counted it in the user's shard), ack json, tip json,
--       message json, room message (tip_received and chat_message), stream id
-- Returns {'ok'}, {'dup', first ack}, an error, or {'stale', cleared_before} when the TIP
-- message's id is older than the last chat clear (the caller retries with a newer id).
local stream_key, rate_key, idempotency_key = KEYS[1], KEYS[2], KEYS[3]
local recent_key, unflushed_key, sanctions_key = KEYS[4], KEYS[5], KEYS[6]
local outbox_key, channel, idle_key = KEYS[7], KEYS[8], KEYS[9]
local rate_limit, rate_period, recent_size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local idempotency_ttl, user, message_id = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local amount_cents, fee_cents = tonumber(ARGV[7]), tonumber(ARGV[8])
local idempotent, count_rate = ARGV[9] == '1', ARGV[10] == '1'
local ack_json, tip_json, message_json, room_message = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local stream_id = ARGV[15]

local bad = live_check(stream_key)
if bad then return bad end
if idempotent then
  local first = redis.call('GET', idempotency_key)
  if first then return {'dup', first} end
end
local h = redis.call('HMGET', stream_key, 'cleared_before', 'recent_floor')
local cleared, floor = h[1], h[2]
if cleared and message_id <= cleared then return {'stale', cleared} end
local now = now_ms()
bad = sanction_check(sanctions_key, user, now)
if bad then return bad end
if count_rate then
  bad = rate_check(rate_key, rate_limit, rate_period, now)
  if bad then return bad end
end
if idempotent then
  redis.call('SET', idempotency_key, ack_json, 'EX', idempotency_ttl)
end
redis.call('HINCRBY', stream_key, 'tip_count', 1)
redis.call('HINCRBY', stream_key, 'tips_cents', amount_cents)
redis.call('HINCRBY', stream_key, 'fees_cents', fee_cents)
redis.call('HINCRBY', stream_key, 'message_count', 1)
-- The TIP message kept as chat_batch.lua keeps messages, the recent set then trimmed back to
-- its size.
keep_messages(recent_key, unflushed_key, {message_json}, floor)
trim_recent(stream_key, recent_key, recent_size)
redis.call('XADD', outbox_key, '*', 't', 'tip', 'd', tip_json)
redis.call('XADD', outbox_key, '*', 't', 'message', 'd', message_json)
redis.call(PUBLISH, channel, room_message)
idle_push(idle_key, stream_id, now)  -- a tip is activity
return {'ok'}
