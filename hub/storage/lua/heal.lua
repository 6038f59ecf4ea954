-- A stream MySQL holds as LIVE or SCHEDULED whose hash Redis lost with its data (hub.recovery).
-- A LIVE one is ended as end.lua ends one: its hash, written back from MySQL's row with the
-- figures MySQL's rows give, says ENDED; its final record goes to the outbox; the room is told
-- and emptied; the hash and the unique set are left to expire. A SCHEDULED one not yet past its
-- time plus the grace period gets its hash back as create.lua wrote it (no record: MySQL has
-- it), so that it can still be started. Nothing happens when the hash exists: another worker
-- healed the stream first, or it was never lost.
-- KEYS: stream hash, unique set, outbox, streamer scheduled
-- ARGV: prefix, channel prefix, namespace, stream_id, retention s, status in MySQL (LIVE or
--       SCHEDULED), unstarted expiry ms (SCHEDULED), n, then n unique viewers, then the hash's
--       field/value pairs
-- Returns {'ok', healed (1 or 0), status, duration_seconds ('' unless ended)}.
local prefix, channel, namespace, stream_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local retention, status = tonumber(ARGV[5]), ARGV[6]
local expires, n = tonumber(ARGV[7]), tonumber(ARGV[8])
local base, unique = KEYS[1], KEYS[2]
if redis.call('EXISTS', base) == 1 then
  local h = redis.call('HMGET', base, 'status', 'duration_seconds')
  return {'ok', 0, h[1], h[2] or ''}
end
local fields = {}
for i = 9 + n, #ARGV do fields[#fields + 1] = ARGV[i] end
local now = now_ms()
if status == 'SCHEDULED' then
  if expires <= now then return {'ok', 0, '', ''} end  -- expired unstarted: nothing to restore
  redis.call('HSET', base, unpack(fields))
  redis.call('PEXPIREAT', base, expires)
  redis.call('ZADD', KEYS[4], expires, stream_id)
  redis.call('PEXPIREAT', KEYS[4], tonumber(redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')[2]))
  return {'ok', 1, 'SCHEDULED', ''}
end
redis.call('HSET', base, unpack(fields))
for i = 9, 8 + n, 1000 do
  redis.call('SADD', unique, unpack(ARGV, i, math.min(i + 999, 8 + n)))
end
local started = tonumber(redis.call('HGET', base, 'started_at')) or now
local duration = math.max(0, math.floor((now - started) / 1000))
redis.call('HSET', base, 'status', 'ENDED', 'ended_at', now, 'duration_seconds', duration, 'updated_at', now)
outbox(KEYS[3], 'stream', stream_record(prefix, stream_id))
emit(channel, namespace, 'stream_ended', {stream_id = stream_id, duration = duration}, stream_id)
redis.call(PUBLISH, channel .. stream_id, '!close')
redis.call('EXPIRE', base, retention)
redis.call('EXPIRE', unique, retention)
return {'ok', 1, 'ENDED', duration}
