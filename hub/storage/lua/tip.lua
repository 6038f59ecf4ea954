-- One accepted tip: idempotency, checks, money counters (cents), the TIP chat message,
-- outbox records and both broadcasts together.
-- KEYS: stream hash, rate key, idempotency key, recent set, outbox, stream channel, sanctions,
--       unflushed set
-- ARGV: rate limit, rate period ms, recent size, amount cents, fee cents, idempotency ttl s,
--       ack json, tip json, message json, room message (tip_received and chat_message),
--       has idempotency key, user id, TIP message id, count the tip rate here ('1'/'0': the
--       caller counted it in the user's shard)
-- Returns {'ok'}, {'dup', first ack}, an error, or {'stale', cleared_before} when the TIP
-- message's id is older than the last chat clear (the caller retries with a newer id).
local bad = live_check(KEYS[1])
if bad then return bad end
if ARGV[11] == '1' then
  local first = redis.call('GET', KEYS[3])
  if first then return {'dup', first} end
end
local cleared = redis.call('HGET', KEYS[1], 'cleared_before')
if cleared and ARGV[13] <= cleared then return {'stale', cleared} end
local now = now_ms()
bad = sanction_check(KEYS[7], ARGV[12], now)
if bad then return bad end
if ARGV[14] == '1' then
  bad = rate_check(KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), now)
  if bad then return bad end
end
if ARGV[11] == '1' then
  redis.call('SET', KEYS[3], ARGV[7], 'EX', tonumber(ARGV[6]))
end
redis.call('HINCRBY', KEYS[1], 'tip_count', 1)
redis.call('HINCRBY', KEYS[1], 'tips_cents', tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[1], 'fees_cents', tonumber(ARGV[5]))
redis.call('HINCRBY', KEYS[1], 'message_count', 1)
keep_messages(KEYS[1], {ARGV[9]}, redis.call('HGET', KEYS[1], 'recent_floor'))
trim_recent(KEYS[1], tonumber(ARGV[3]))
redis.call('XADD', KEYS[5], '*', 't', 'tip', 'd', ARGV[8])
redis.call('XADD', KEYS[5], '*', 't', 'message', 'd', ARGV[9])
redis.call(PUBLISH, KEYS[6], ARGV[10])
return {'ok'}
