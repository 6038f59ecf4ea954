-- Sweep connections whose worker stopped refreshing them (died or froze), and send the viewer
-- events that large streams kept back (viewer_event in common.lua).
-- KEYS: live
-- ARGV: prefix, channel, namespace, max per stream
local prefix, channel, namespace, most = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local swept = 0
for _, stream_id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local conns = prefix .. 'stream:' .. stream_id .. ':conns'
  local expired = redis.call('ZRANGEBYSCORE', conns, '-inf', now, 'LIMIT', 0, most)
  for _, member in ipairs(expired) do
    redis.call('ZREM', conns, member)
    drop_conn(prefix, channel, namespace, stream_id, member, now)
    swept = swept + 1
  end
  flush_viewer_event(channel, namespace, stream_id, prefix .. 'stream:' .. stream_id, now)
end
return {'ok', swept}
