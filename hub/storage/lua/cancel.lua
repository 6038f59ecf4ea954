-- SCHEDULED -> ENDED without going live (the streamer cancels it): final record to the outbox,
-- live state left to expire.
-- KEYS: stream hash, unique set, streamer scheduled, outbox
-- ARGV: stream_id, retention s
local hash_key, unique_key, scheduled_key, outbox_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local stream_id, retention = ARGV[1], tonumber(ARGV[2])
local status = redis.call('HGET', hash_key, 'status')
if not status then return fail('not_found') end
if status ~= 'SCHEDULED' then return fail('conflict', nil, 'Only a scheduled stream can be cancelled.') end
local now = now_ms()
redis.call('HSET', hash_key, 'status', 'ENDED', 'ended_at', now, 'duration_seconds', 0)
bump(hash_key, now)
redis.call('ZREM', scheduled_key, stream_id)
outbox(outbox_key, 'stream', stream_record(hash_key, unique_key))
redis.call('EXPIRE', hash_key, retention)
return {'ok'}
