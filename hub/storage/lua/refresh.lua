-- Extend this worker's connections in one stream; re-assert any that were swept while the
-- worker could not refresh them (frozen, or Redis restarted), unless their user was banned.
-- KEYS: stream hash, conns, sanctions
-- ARGV: prefix, channel, namespace, stream_id, ttl_ms, then (member, sid, username) triples
local prefix, channel, namespace, stream_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl = tonumber(ARGV[5])
if redis.call('HGET', KEYS[1], 'status') ~= 'LIVE' then return {'err', 'stream_not_live'} end
local now = now_ms()
local reasserted = 0
for i = 6, #ARGV, 3 do
  local member = ARGV[i]
  if redis.call('ZSCORE', KEYS[2], member) then
    redis.call('ZADD', KEYS[2], now + ttl, member)
  else
    local _, _, viewer = split_member(member)
    local user = viewer_user(viewer)
    if not is_banned(KEYS[3], user) then
      add_conn(prefix, channel, namespace, stream_id, member, now + ttl, ARGV[i + 1], ARGV[i + 2])
      reasserted = reasserted + 1
    end
  end
end
return {'ok', reasserted}
