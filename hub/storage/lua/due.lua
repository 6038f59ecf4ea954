-- The sweep of what has come due in one shard, read from the low end of two indexes, so that
-- its cost follows what is due, not how many streams are live: the viewer events large streams
-- kept back (viewer_event in common.lua), sent; and the LIVE streams idle for
-- HUB_LIVE_IDLE_END, claimed for the caller to end (each pushed `claim ms` ahead, so that
-- another worker's sweep does not take it too, and a caller that dies leaves it to a later
-- sweep). The streams are learned from the indexes, so their keys are built here.
-- KEYS: viewer events due, idle index
-- ARGV: prefix, most streams read from each index, claim ms
-- Returns {'ok', viewer events sent, {stream id, streamer id, …} to end, more (1: an index
-- gave `most`, call again)}.
local due_key, idle_key = KEYS[1], KEYS[2]
local prefix, most, claim_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', due_key, '-inf', now, 'LIMIT', 0, most)
local sent = 0
for _, stream_id in ipairs(due) do
  if flush_viewer_event(stream_keys(prefix, stream_id), now, due_key) then sent = sent + 1 end
end
local idle = {}
if LIVE_IDLE_MS > 0 then idle = redis.call('ZRANGEBYSCORE', idle_key, '-inf', now, 'LIMIT', 0, most) end
local ending = {}
for _, stream_id in ipairs(idle) do
  local stream = stream_keys(prefix, stream_id)
  local h = redis.call('HMGET', stream.hash, 'status', 'streamer_id')
  if h[1] ~= 'LIVE' then
    redis.call('ZREM', idle_key, stream_id)  -- ended or gone without end.lua: nothing to end
  elseif h[2] and redis.call('HEXISTS', stream.viewers, 'u:' .. h[2]) == 1 then
    -- Its streamer watches (joined through a script not given the index): not idle; looked
    -- at again an idle period on.
    redis.call('ZADD', idle_key, now + LIVE_IDLE_MS, stream_id)
  else
    redis.call('ZADD', idle_key, now + claim_ms, stream_id)
    ending[#ending + 1] = stream_id
    ending[#ending + 1] = h[2] or ''
  end
end
local more = (#due == most or #idle == most) and 1 or 0
return {'ok', sent, ending, more}
