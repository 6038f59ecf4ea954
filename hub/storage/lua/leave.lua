-- A connection stops watching a stream.
-- KEYS: stream hash, conns, viewers, live set, outbox, stream channel, viewer events due, idle
--       index
-- ARGV: prefix (names the category's live set and a lease's registry), stream_id, member
-- Returns {'ok', viewer count} (0 when the connection was not watching).
local hash_key, conns_key, viewers_key, live_key, outbox_key, room = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local due_key, idle_key = KEYS[7], KEYS[8]
local prefix, stream_id, member = ARGV[1], ARGV[2], ARGV[3]
if not unhold(prefix, conns_key, 'c', stream_id, member) then return {'ok', 0} end
local stream = {id = stream_id, hash = hash_key, conns = conns_key, viewers = viewers_key, room = room}
local shard = shard_keys(prefix, live_key, outbox_key, nil, due_key, idle_key)
return {'ok', stop_watching(shard, stream, member, now_ms())}
