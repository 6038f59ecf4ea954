-- SCHEDULED -> LIVE.
-- KEYS: stream hash, unique set, streamer live key, streamer scheduled, live set, outbox, idle
--       index
-- ARGV: prefix (names the streamer's current stream and the category's live set), stream_id
local hash_key, unique_key, streamer_live_key, scheduled_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local live_key, outbox_key, idle_key = KEYS[5], KEYS[6], KEYS[7]
local prefix, stream_id = ARGV[1], ARGV[2]
local status = redis.call('HGET', hash_key, 'status')
if not status then return fail('not_found') end
if status ~= 'SCHEDULED' then return fail('conflict') end
local current = redis.call('GET', streamer_live_key)
if current and redis.call('HGET', key_stream(prefix, current), 'status') == 'LIVE' then
  return fail('conflict')
end
local now = now_ms()
redis.call('SET', streamer_live_key, stream_id)
redis.call('HSET', hash_key, 'status', 'LIVE', 'started_at', now)
redis.call('PERSIST', hash_key)  -- live: no longer expires unstarted
redis.call('ZREM', scheduled_key, stream_id)
bump(hash_key, now)
set_live_score(shard_keys(prefix, live_key, outbox_key), {id = stream_id, hash = hash_key}, 0)
if LIVE_IDLE_MS > 0 then redis.call('ZADD', idle_key, now + LIVE_IDLE_MS, stream_id) end
outbox(outbox_key, 'stream', stream_record(hash_key, unique_key))
return {'ok'}
