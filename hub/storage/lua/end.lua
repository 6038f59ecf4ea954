-- LIVE -> ENDED: final figures to the outbox, open viewing sessions closed, the room told
-- and emptied, live state left to expire.
-- KEYS: stream hash, streamer live key
-- ARGV: prefix, channel, namespace, stream_id, retention s
local prefix, channel, namespace, stream_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local retention = tonumber(ARGV[5])
local base = KEYS[1]
local status = redis.call('HGET', base, 'status')
if not status then return {'err', 'not_found'} end
if status ~= 'LIVE' then return {'err', 'conflict'} end
local now = now_ms()
local started = tonumber(redis.call('HGET', base, 'started_at') or now) or now
local duration = math.max(0, math.floor((now - started) / 1000))
redis.call('HSET', base, 'status', 'ENDED', 'ended_at', now, 'duration_seconds', duration)
bump(base, now)
for _, member in ipairs(redis.call('ZRANGE', base .. ':conns', 0, -1)) do
  session_record(prefix, stream_id, member, now)
end
redis.call('DEL', base .. ':conns', base .. ':viewers')
redis.call('ZREM', prefix .. 'live', stream_id)
local category = redis.call('HGET', base, 'category')
if category and category ~= '' then redis.call('ZREM', prefix .. 'live:cat:' .. category, stream_id) end
if redis.call('GET', KEYS[2]) == stream_id then redis.call('DEL', KEYS[2]) end
outbox(prefix .. 'outbox', 'stream', stream_record(prefix, stream_id))
emit(channel, namespace, 'stream_ended', {stream_id = stream_id, duration = duration}, stream_id)
redis.call(PUBLISH, channel .. stream_id, '!close')
for _, key in ipairs({base, base .. ':unique', base .. ':recent', base .. ':mods',
                      base .. ':sanctions', base .. ':deleted', base .. ':modlog'}) do
  redis.call('EXPIRE', key, retention)
end
return {'ok', duration}
