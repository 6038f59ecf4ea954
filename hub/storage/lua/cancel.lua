-- SCHEDULED -> ENDED without going live (the streamer cancels it): final record to the outbox,
-- live state left to expire.
-- KEYS: stream hash, streamer scheduled
-- ARGV: prefix, stream_id, retention s
local prefix, stream_id = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'err', 'not_found'} end
if status ~= 'SCHEDULED' then return {'err', 'conflict', false, 'Only a scheduled stream can be cancelled.'} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'ENDED', 'ended_at', now, 'duration_seconds', 0)
bump(KEYS[1], now)
redis.call('ZREM', KEYS[2], stream_id)
outbox(prefix .. 'outbox', 'stream', stream_record(prefix, stream_id))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {'ok'}
