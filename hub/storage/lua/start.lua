-- SCHEDULED -> LIVE.
-- KEYS: stream hash, streamer live key, streamer scheduled
-- ARGV: prefix, stream_id
local prefix, stream_id = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'err', 'not_found'} end
if status ~= 'SCHEDULED' then return {'err', 'conflict'} end
local current = redis.call('GET', KEYS[2])
if current and redis.call('HGET', prefix .. 'stream:' .. current, 'status') == 'LIVE' then
  return {'err', 'conflict'}
end
local now = now_ms()
redis.call('SET', KEYS[2], stream_id)
redis.call('HSET', KEYS[1], 'status', 'LIVE', 'started_at', now)
redis.call('PERSIST', KEYS[1])  -- live: no longer expires unstarted
redis.call('ZREM', KEYS[3], stream_id)
bump(KEYS[1], now)
set_live_score(prefix, stream_id, 0)
outbox(prefix .. 'outbox', 'stream', stream_record(prefix, stream_id))
return {'ok'}
