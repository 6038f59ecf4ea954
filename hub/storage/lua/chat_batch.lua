-- The chat messages (and streamers' trade alerts) one worker received in one event-loop tick
-- of one shard's streams, in one call: each is checked (stream, clear, role, sanctions, slow
-- mode, rate); the accepted ones of a stream share one counter update, one ZADD to its recent
-- set and one to its unflushed set, and one PUBLISH (their frames one per line), and all of
-- them one outbox entry (t = messages, then the records' texts as fields '1', '2', …). The
-- rate state is the shard's (window_logs in common.lua); a message whose sender's rate lives in
-- another shard comes with its rate already checked (chat_rate.lua) and is not counted here.
-- KEYS: outbox
-- ARGV: prefix, channel prefix, rate limit, privileged rate limit, period ms, recent size, n,
--       rate window key prefix (the window number follows it),
--       then n times: stream id, user id, admin ('1'/'0'), kind ('chat' | 'alert'), message id,
--       message json, frame (the Engine.IO text of its chat_message event), rate counted
--       here ('1'/'0')
-- Returns one reply per message: {'ok'}, {'err', code, retry ms}, or {'stale', cleared_before}.
local FIELDS = 8
local prefix, channel_prefix, rate_prefix = ARGV[1], ARGV[2], ARGV[8]
local limit, privileged, period = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local recent_size, n = tonumber(ARGV[6]), tonumber(ARGV[7])
local step = math.max(1, math.floor(recent_size / 10))
local now = now_ms()

-- The streams of the batch, and the users whose rate is counted here.
local streams, stream_order, users, user_order = {}, {}, {}, {}
for i = 1, n do
  local at = 8 + (i - 1) * FIELDS
  local sid, user = ARGV[at + 1], ARGV[at + 2]
  if not streams[sid] then
    streams[sid] = {messages = {}, frames = {}}
    stream_order[#stream_order + 1] = sid
  end
  if ARGV[at + 8] == '1' and users[user] == nil then
    users[user] = false
    user_order[#user_order + 1] = user
  end
end
window_logs(rate_prefix, period, now, users, user_order)

-- Each stream's state, and its moderators and sanctions only where it has any.
for _, sid in ipairs(stream_order) do
  local s = streams[sid]
  local base = prefix .. 'stream:' .. sid
  local h = redis.call('HMGET', base, 'status', 'streamer_id', 'slow_mode', 'cleared_before',
                       'mod_count', 'sanction_count', 'recent_floor')
  s.status, s.streamer, s.slow, s.cleared = h[1], h[2], tonumber(h[3] or '0') or 0, h[4]
  s.has_mods = tonumber(h[5] or '0') > 0
  s.has_sanctions = tonumber(h[6] or '0') > 0
  s.floor = h[7]
  s.base = base
end

local replies, changed = {}, {}
for i = 1, n do
  local at = 8 + (i - 1) * FIELDS
  local sid, user, admin, kind, id = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  local s = streams[sid]
  local reply = nil
  if not s.status then
    reply = {'err', 'not_found'}
  elseif s.status ~= 'LIVE' then
    reply = {'err', 'stream_not_live'}
  elseif s.cleared and id <= s.cleared then
    reply = {'stale', s.cleared}
  else
    local role = role_of(s.streamer, s.base .. ':mods', user, admin, not s.has_mods)
    if kind == 'alert' and role ~= 'streamer' then reply = {'err', 'forbidden'} end
    if not reply and role ~= 'streamer' and s.has_sanctions then
      reply = sanction_check(s.base .. ':sanctions', user, now)
    end
    local slow = (role or reply) and 0 or s.slow
    local slow_key = s.base .. ':slow:' .. user
    if not reply and slow > 0 then
      local wait = redis.call('PTTL', slow_key)
      if wait > 0 then reply = {'err', 'slow_mode', wait} end
    end
    local counted = ARGV[at + 8] == '1'
    if not reply then
      -- The sender's log of accepted times, held for this batch (written back once, below).
      local log, refusal = nil, nil
      if counted then log, refusal = window_admit(users[user], role and privileged or limit, period, now) end
      if refusal then
        reply = refusal
      else
        if counted then
          users[user] = log
          changed[#changed + 1] = user
        end
        if slow > 0 then redis.call('SET', slow_key, '1', 'PX', slow * 1000) end
        s.messages[#s.messages + 1] = ARGV[at + 6]
        s.frames[#s.frames + 1] = ARGV[at + 7]
        reply = {'ok'}
      end
    end
  end
  replies[i] = reply
end

window_save(rate_prefix, period, now, users, changed)

local records = {}
for _, sid in ipairs(stream_order) do
  local s = streams[sid]
  local k = #s.messages
  if k > 0 then
    local count = redis.call('HINCRBY', s.base, 'message_count', k)
    keep_messages(s.base, s.messages, s.floor)
    -- The recent set may hold up to a tenth more than its size: trimmed each time the message
    -- count passes a tenth of it, so its length is not read per call.
    if math.floor(count / step) ~= math.floor((count - k) / step) then trim_recent(s.base, recent_size) end
    redis.call(PUBLISH, channel_prefix .. sid, '\n' .. table.concat(s.frames, '\n'))
    for _, m in ipairs(s.messages) do records[#records + 1] = m end
  end
end
if #records > 0 then
  -- One field per message ('1', '2', …), each its text exactly as the sets hold it, so that the
  -- flusher takes it out of the stream's unflushed set by value.
  local fields = {'t', 'messages'}
  for i, m in ipairs(records) do
    fields[#fields + 1] = tostring(i)
    fields[#fields + 1] = m
  end
  redis.call('XADD', KEYS[1], '*', unpack(fields))
end
return replies
