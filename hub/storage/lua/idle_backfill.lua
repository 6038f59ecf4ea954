-- One chunk of the shard's live set given an idle end where it has none (streams that were live
-- before the index existed, or before HUB_LIVE_IDLE_END was turned on): now + HUB_LIVE_IDLE_END,
-- unless a socket of the stream's streamer watches it (start_watching keeps such a stream out).
-- A stream already in the index keeps its time. Run once per shard when a worker starts, so its
-- cost is per start; the live set is ranked by viewers, which may move between two chunks: a
-- stream read twice is left as the first call set it, one skipped is given its end by the next
-- worker's start. The streams are learned from the live set, so their keys are built here.
-- KEYS: live set, idle index
-- ARGV: prefix, first rank, how many
-- Returns {'ok', streams given an end, '1' when the live set may go on | '0'}.
local live_key, idle_key = KEYS[1], KEYS[2]
local prefix, first, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGE', live_key, first, first + count - 1)
local now = now_ms()
local added = 0
for _, stream_id in ipairs(ids) do
  if not redis.call('ZSCORE', idle_key, stream_id) then
    local streamer = redis.call('HGET', key_stream(prefix, stream_id), 'streamer_id')
    if not (streamer and redis.call('HEXISTS', key_viewers(prefix, stream_id), 'u:' .. streamer) == 1) then
      added = added + redis.call('ZADD', idle_key, 'NX', now + LIVE_IDLE_MS, stream_id)
    end
  end
end
return {'ok', added, #ids == count and '1' or '0'}
