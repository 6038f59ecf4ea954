-- LIVE -> ENDED: final figures to the outbox, open viewing sessions closed, the room told
-- and emptied, live state left to expire.
-- KEYS: stream hash, conns, viewers, unique set, recent set, moderators, sanctions, deleted
--       set, moderation log, streamer live key, live set, outbox, stream channel, viewer events
--       due, idle index, the shard's recently ended streams
-- ARGV: prefix (names the category's live set and the leases' registries), stream_id,
--       retention s, how long the recently ended streams keep an end (ms)
local hash_key, conns_key, viewers_key, unique_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local recent_key, mods_key, sanctions_key, deleted_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local modlog_key, streamer_live_key, live_key, outbox_key = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local room, due_key, idle_key, ended_key = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local prefix, stream_id, retention, ended_kept = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local status = redis.call('HGET', hash_key, 'status')
if not status then return fail('not_found') end
if status ~= 'LIVE' then return fail('conflict') end
local now = now_ms()
local started = tonumber(redis.call('HGET', hash_key, 'started_at') or now) or now
local duration = math.max(0, math.floor((now - started) / 1000))
redis.call('HSET', hash_key, 'status', 'ENDED', 'ended_at', now, 'duration_seconds', duration)
bump(hash_key, now)
local held = redis.call('ZRANGE', conns_key, 0, -1, 'WITHSCORES')
for i = 1, #held, 2 do
  local member, lease = held[i], held[i + 1]
  session_record(outbox_key, stream_id, member, now)
  redis.call('SREM', key_lease_held(prefix, lease), lease_entry('c', stream_id, member))
end
redis.call('DEL', conns_key, viewers_key)
redis.call('ZREM', live_key, stream_id)
redis.call('ZREM', due_key, stream_id)
redis.call('ZREM', idle_key, stream_id)
-- Told to the workers' lease renewals (renew.lua), in case one missed the room's close order.
redis.call('ZADD', ended_key, now, stream_id)
redis.call('ZREMRANGEBYSCORE', ended_key, '-inf', now - ended_kept)
local category = redis.call('HGET', hash_key, 'category')
if category and category ~= '' then redis.call('ZREM', key_live_category(prefix, category), stream_id) end
if redis.call('GET', streamer_live_key) == stream_id then redis.call('DEL', streamer_live_key) end
outbox(outbox_key, 'stream', stream_record(hash_key, unique_key))
publish_events(room, nil, {frame('stream_ended', {stream_id = stream_id, duration = duration})})
publish_order(room, ORDER_CLOSE)
for _, key in ipairs({hash_key, unique_key, recent_key, mods_key, sanctions_key, deleted_key, modlog_key}) do
  redis.call('EXPIRE', key, retention)
end
return {'ok', duration}
