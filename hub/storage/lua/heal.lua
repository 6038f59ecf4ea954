-- A stream MySQL holds as LIVE or SCHEDULED whose hash Redis lost with its data (hub.recovery).
-- A LIVE one is ended as end.lua ends one: its hash, written back from MySQL's row with the
-- figures MySQL's rows give, says ENDED; its final record goes to the outbox; the room is told
-- and emptied; the hash and the unique set are left to expire. A SCHEDULED one not yet past its
-- time plus the grace period gets its hash back as create.lua wrote it (no record: MySQL has
-- it), so that it can still be started. Nothing happens when the hash exists: another worker
-- healed the stream first, or it was never lost.
-- KEYS: stream hash, unique set, outbox, streamer scheduled, stream channel, viewer events due,
--       idle index
-- ARGV: stream_id, retention s, status in MySQL (LIVE or SCHEDULED), unstarted expiry ms
--       (SCHEDULED), n, then n unique viewers, then the hash's field/value pairs
-- Returns {'ok', healed (1 or 0), status, duration_seconds ('' unless ended)}.
local hash_key, unique_key, outbox_key, scheduled_key, room = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local due_key, idle_key = KEYS[6], KEYS[7]
local stream_id, retention, status = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local expires, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local viewers = slice(ARGV, 6, 5 + n)
local fields = slice(ARGV, 6 + n)
if redis.call('EXISTS', hash_key) == 1 then
  local h = redis.call('HMGET', hash_key, 'status', 'duration_seconds')
  return {'ok', 0, h[1], h[2] or ''}
end
local now = now_ms()
if status == 'SCHEDULED' then
  if expires <= now then return {'ok', 0, '', ''} end  -- expired unstarted: nothing to restore
  redis.call('HSET', hash_key, unpack(fields))
  redis.call('PEXPIREAT', hash_key, expires)
  redis.call('ZADD', scheduled_key, expires, stream_id)
  redis.call('PEXPIREAT', scheduled_key, tonumber(redis.call('ZRANGE', scheduled_key, -1, -1, 'WITHSCORES')[2]))
  return {'ok', 1, 'SCHEDULED', ''}
end
redis.call('HSET', hash_key, unpack(fields))
for i = 1, n, 1000 do
  redis.call('SADD', unique_key, unpack(viewers, i, math.min(i + 999, n)))
end
local started = tonumber(redis.call('HGET', hash_key, 'started_at')) or now
local duration = math.max(0, math.floor((now - started) / 1000))
redis.call('HSET', hash_key, 'status', 'ENDED', 'ended_at', now, 'duration_seconds', duration, 'updated_at', now)
redis.call('ZREM', due_key, stream_id)
redis.call('ZREM', idle_key, stream_id)
outbox(outbox_key, 'stream', stream_record(hash_key, unique_key))
publish_events(room, nil, {frame('stream_ended', {stream_id = stream_id, duration = duration})})
publish_order(room, ORDER_CLOSE)
redis.call('EXPIRE', hash_key, retention)
redis.call('EXPIRE', unique_key, retention)
return {'ok', 1, 'ENDED', duration}
