-- This worker's connections in one stream re-asserted under its new lease (its old one lapsed:
-- the worker froze, or Redis lost its data): a member still there is re-scored, so that the
-- old lease's sweep leaves it; one swept meanwhile starts watching again, unless its user was
-- banned.
-- KEYS: stream hash, conns, viewers, unique set, sanctions, live set, outbox, stream channel,
--       the shard's leases, this worker's lease's registry, viewer events due, idle index
-- ARGV: prefix (names the category's live set and a lease's registry), stream_id, this
--       worker's lease, then (member, sid, username) triples
-- Returns {'ok', connections that started watching again}.
local hash_key, conns_key, viewers_key, unique_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sanctions_key, live_key, outbox_key, room = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local leases_key, held_key, due_key, idle_key = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local prefix, stream_id, lease_n = ARGV[1], ARGV[2], ARGV[3]
local triples = slice(ARGV, 4)
if redis.call('HGET', hash_key, 'status') ~= 'LIVE' then return fail('stream_not_live') end
local shard = shard_keys(prefix, live_key, outbox_key, leases_key, due_key, idle_key)
local stream = {id = stream_id, hash = hash_key, conns = conns_key, viewers = viewers_key,
                unique = unique_key, room = room}
local lease = {n = lease_n, held = held_key}
local reasserted = 0
for i = 1, #triples, 3 do
  local member, sid, username = triples[i], triples[i + 1], triples[i + 2]
  local old = redis.call('ZSCORE', conns_key, member)
  if old then
    hold(shard, lease, conns_key, 'c', stream_id, member, old)
  else
    local _, _, viewer = split_member(member)
    if not is_banned(sanctions_key, viewer_user(viewer)) then
      start_watching(shard, stream, member, lease, sid, username)
      reasserted = reasserted + 1
    end
  end
end
return {'ok', reasserted}
