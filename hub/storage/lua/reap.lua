-- Sweep connections whose worker stopped refreshing them (died or froze), and send the viewer
-- events that large streams kept back (viewer_event in common.lua). The streams are learned
-- from the live set, so their keys are built here (key_* from hub.storage.keys).
-- KEYS: live set, outbox
-- ARGV: prefix, most connections swept per stream
-- Returns {'ok', connections swept}.
local live_key, outbox_key = KEYS[1], KEYS[2]
local prefix, most = ARGV[1], tonumber(ARGV[2])
local shard = shard_keys(prefix, live_key, outbox_key)
local now = now_ms()
local swept = 0
for _, stream_id in ipairs(redis.call('ZRANGE', live_key, 0, -1)) do
  local stream = stream_keys(prefix, stream_id)
  local expired = redis.call('ZRANGEBYSCORE', stream.conns, '-inf', now, 'LIMIT', 0, most)
  for _, member in ipairs(expired) do
    redis.call('ZREM', stream.conns, member)
    stop_watching(shard, stream, member, now)
    swept = swept + 1
  end
  flush_viewer_event(stream, now)
end
return {'ok', swept}
