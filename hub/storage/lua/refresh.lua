-- Extend this worker's connections in one stream; re-assert any that were swept while the
-- worker could not refresh them (frozen, or Redis restarted), unless their user was banned.
-- KEYS: stream hash, conns, viewers, unique set, sanctions, live set, outbox, stream channel,
--       viewer events due, idle index
-- ARGV: prefix (names the category's live set), stream_id, ttl ms, then (member, sid, username)
--       triples
-- Returns {'ok', connections re-asserted}.
local hash_key, conns_key, viewers_key, unique_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sanctions_key, live_key, outbox_key, room = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local due_key, idle_key = KEYS[9], KEYS[10]
local prefix, stream_id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local triples = slice(ARGV, 4)
if redis.call('HGET', hash_key, 'status') ~= 'LIVE' then return fail('stream_not_live') end
local shard = shard_keys(prefix, live_key, outbox_key, due_key, idle_key)
local stream = {id = stream_id, hash = hash_key, conns = conns_key, viewers = viewers_key,
                unique = unique_key, room = room}
local now = now_ms()
local reasserted = 0
for i = 1, #triples, 3 do
  local member, sid, username = triples[i], triples[i + 1], triples[i + 2]
  if redis.call('ZSCORE', conns_key, member) then
    redis.call('ZADD', conns_key, now + ttl, member)
  else
    local _, _, viewer = split_member(member)
    if not is_banned(sanctions_key, viewer_user(viewer)) then
      start_watching(shard, stream, member, now + ttl, sid, username)
      reasserted = reasserted + 1
    end
  end
end
return {'ok', reasserted}
