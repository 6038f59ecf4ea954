-- A connection starts watching a stream (or watches it again): the viewer's join rate, the
-- stream live, the user not banned; then the stream and its newest messages.
-- KEYS: stream hash, conns, viewers, unique set, recent set, join rate key, sanctions, live
--       set, outbox, stream channel, the shard's leases, this worker's lease's registry, viewer
--       events due, idle index
-- ARGV: prefix (names the category's live set and a lease's registry), stream_id, member,
--       this worker's lease, sid, username, join limit, join period ms, recent messages wanted,
--       count the join rate here ('1'/'0':
--       the caller counted it in the viewer's shard), only messages after this id ('': any)
-- Returns {'ok', viewer count, stream hash (flat), recent messages (newest first)}.
local hash_key, conns_key, viewers_key, unique_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local recent_key, rate_key, sanctions_key = KEYS[5], KEYS[6], KEYS[7]
local live_key, outbox_key, room, leases_key, held_key = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local due_key, idle_key = KEYS[13], KEYS[14]
local prefix, stream_id, member, lease_n = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local sid, username, rate_limit, period_ms = ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local wanted, count_rate, after = tonumber(ARGV[9]), ARGV[10] == '1', ARGV[11]
local now = now_ms()
local bad = nil
if count_rate then bad = rate_check(rate_key, rate_limit, period_ms, now) end
if bad then return bad end
bad = live_check(hash_key)
if bad then return bad end
local _, _, viewer = split_member(member)
if is_banned(sanctions_key, viewer_user(viewer)) then return fail('banned') end
local shard = shard_keys(prefix, live_key, outbox_key, leases_key, due_key, idle_key)
local lease = {n = lease_n, held = held_key}
local count
local old = redis.call('ZSCORE', conns_key, member)
if old then
  hold(shard, lease, conns_key, 'c', stream_id, member, old)
  count = redis.call('HLEN', viewers_key)
else
  local stream = {id = stream_id, hash = hash_key, conns = conns_key, viewers = viewers_key,
                  unique = unique_key, room = room}
  count = start_watching(shard, stream, member, lease, sid, username)
end
idle_push(idle_key, stream_id, now)  -- a join is activity
-- The newest `wanted` messages of the recent set, newest first, or with `after` the newest
-- `wanted` of those with a higher id.
local recent
if after ~= '' then
  recent = redis.call('ZREVRANGEBYLEX', recent_key, '+', '[{"message_id":"' .. after .. '"\255',
                      'LIMIT', 0, wanted)
else
  recent = redis.call('ZREVRANGE', recent_key, 0, wanted - 1)
end
return {'ok', count, redis.call('HGETALL', hash_key), recent}
