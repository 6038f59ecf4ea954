-- KEYS: stream hash, conns, recent set, join rate key, sanctions
-- ARGV: prefix, channel prefix, namespace, stream_id, member, ttl_ms, sid, username, join limit,
--       join period ms, recent messages wanted, count the join rate here ('1'/'0': the
--       caller counted it in the viewer's shard), only messages after this id ('': any)
-- Returns {'ok', viewer count, stream hash (flat), recent messages (newest first)}.
local prefix, channel, namespace, stream_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local member, ttl, sid, username = ARGV[5], tonumber(ARGV[6]), ARGV[7], ARGV[8]
local now = now_ms()
local bad = nil
if ARGV[12] == '1' then bad = rate_check(KEYS[4], tonumber(ARGV[9]), tonumber(ARGV[10]), now) end
if bad then return bad end
bad = live_check(KEYS[1])
if bad then return bad end
local _, _, viewer = split_member(member)
local user = viewer_user(viewer)
if is_banned(KEYS[5], user) then return {'err', 'banned'} end
local expiry = now + ttl
local count
if redis.call('ZSCORE', KEYS[2], member) then
  redis.call('ZADD', KEYS[2], expiry, member)
  count = redis.call('HLEN', KEYS[1] .. ':viewers')
else
  count = add_conn(prefix, channel, namespace, stream_id, member, expiry, sid, username)
end
-- The newest `wanted` messages of the recent set, newest first, or with `after` the newest
-- `wanted` of those with a higher id.
local wanted, after = tonumber(ARGV[11]), ARGV[13]
local recent
if after ~= '' then
  recent = redis.call('ZREVRANGEBYLEX', KEYS[3], '+', '[{"message_id":"' .. after .. '"\255',
                      'LIMIT', 0, wanted)
else
  recent = redis.call('ZREVRANGE', KEYS[3], 0, wanted - 1)
end
return {'ok', count, redis.call('HGETALL', KEYS[1]), recent}
