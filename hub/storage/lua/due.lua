-- The sweep of what has come due in one shard, read from the low end of two indexes, so that
-- its cost follows what is due, not how many streams are live: the viewer events large streams
-- kept back (viewer_event in common.lua), sent; and the LIVE streams idle for
-- HUB_LIVE_IDLE_END, claimed for the caller to end (each pushed `claim ms` ahead, so that
-- another worker's sweep does not take it too, and a caller that dies leaves it to a later
-- sweep). The streams are learned from the indexes, so their keys are built here (only those
-- each step reads).
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
  local stream = {id = stream_id, hash = key_stream(prefix, stream_id), viewers = key_viewers(prefix, stream_id),
                  room = key_room(prefix, stream_id)}
  if flush_viewer_event(stream, now) then sent = sent + 1 end
end
-- Each was due (its score is when its interval ends): sent, or nothing was held any more.
if #due > 0 then redis.call('ZREM', due_key, unpack(due)) end
local idle = {}
if LIVE_IDLE_MS > 0 then idle = redis.call('ZRANGEBYSCORE', idle_key, '-inf', now, 'LIMIT', 0, most) end
local ending, claims = {}, {}
for _, stream_id in ipairs(idle) do
  local h = redis.call('HMGET', key_stream(prefix, stream_id), 'status', 'streamer_id')
  if h[1] ~= 'LIVE' then
    redis.call('ZREM', idle_key, stream_id)  -- ended or gone without end.lua: nothing to end
  elseif h[2] and redis.call('HEXISTS', key_viewers(prefix, stream_id), 'u:' .. h[2]) == 1 then
    -- Its streamer watches (joined through a script not given the index): not idle; looked
    -- at again an idle period on.
    redis.call('ZADD', idle_key, now + LIVE_IDLE_MS, stream_id)
  else
    claims[#claims + 1] = now + claim_ms
    claims[#claims + 1] = stream_id
    ending[#ending + 1] = stream_id
    ending[#ending + 1] = h[2] or ''
  end
end
if #claims > 0 then redis.call('ZADD', idle_key, unpack(claims)) end
local more = (#due == most or #idle == most) and 1 or 0
return {'ok', sent, ending, more}
