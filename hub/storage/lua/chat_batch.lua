-- The chat messages (and streamers' trade alerts) one worker received in one event-loop tick
-- of one shard's streams, in one call: each is checked (stream, clear, role, sanctions, slow
-- mode, rate); the accepted ones of a stream share one counter update, one ZADD to its recent
-- set and one to its unflushed set, and one PUBLISH (their frames one room message), and all
-- of them one outbox entry (t = messages, then the records' texts as fields '1', '2', …). The
-- rate state is the shard's (window_logs in common.lua, its hashes named from the prefix); a
-- message whose sender's rate lives in another shard comes with its rate already checked
-- (chat_rate.lua) and is not counted here.
-- KEYS: outbox, idle index, then for each stream of the batch STREAM_KEYS keys: its hash,
--       moderators, sanctions, recent set, unflushed set, room channel; then for each message
--       its sender's slow-mode key in its stream
-- ARGV: prefix (names the chat rate's window hashes), rate limit, privileged rate limit,
--       period ms, recent size, streams, messages, then each stream's id (in its keys' order),
--       then for each message MESSAGE_ARGS values: its stream (1, 2, …: its keys' place), user
--       id, admin ('1'/'0'), alert ('1'/'0'), message id, message json, frame (the Engine.IO
--       text of its chat_message event), rate counted here ('1'/'0')
-- Returns one reply per message: {'ok'}, {'err', code, retry ms}, or {'stale', cleared_before}.
local HEADER_KEYS, STREAM_KEYS, HEADER_ARGS, MESSAGE_ARGS = 2, 6, 7, 8
local outbox_key, idle_key = KEYS[1], KEYS[2]
local prefix, limit, privileged = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local period, recent_size = tonumber(ARGV[4]), tonumber(ARGV[5])
local stream_count, n = tonumber(ARGV[6]), tonumber(ARGV[7])

local streams = {}
for j = 1, stream_count do
  local at = HEADER_KEYS + (j - 1) * STREAM_KEYS
  streams[j] = {
    id = ARGV[HEADER_ARGS + j], key = KEYS[at + 1], mods_key = KEYS[at + 2],
    sanctions_key = KEYS[at + 3], recent_key = KEYS[at + 4], unflushed_key = KEYS[at + 5], channel = KEYS[at + 6],
    messages = {}, frames = {},
  }
end
local messages = {}
for i = 1, n do
  local at = HEADER_ARGS + stream_count + (i - 1) * MESSAGE_ARGS
  messages[i] = {
    stream = streams[tonumber(ARGV[at + 1])], user = ARGV[at + 2], admin = ARGV[at + 3],
    alert = ARGV[at + 4] == '1', id = ARGV[at + 5], json = ARGV[at + 6], frame = ARGV[at + 7],
    counted = ARGV[at + 8] == '1', slow_key = KEYS[HEADER_KEYS + stream_count * STREAM_KEYS + i],
  }
end

local step = math.max(1, math.floor(recent_size / 10))
local now = now_ms()

-- The users whose rate is counted here, and their logs.
local users, user_order = {}, {}
for _, m in ipairs(messages) do
  if m.counted and users[m.user] == nil then
    users[m.user] = false
    user_order[#user_order + 1] = m.user
  end
end
window_logs(prefix, period, now, users, user_order)

-- Each stream's state, and its moderators and sanctions only where it has any.
for _, s in ipairs(streams) do
  local h = redis.call('HMGET', s.key, 'status', 'streamer_id', 'slow_mode', 'cleared_before',
                       'mod_count', 'sanction_count', 'recent_floor', 'idle_pushed_ms')
  s.status, s.streamer, s.slow, s.cleared = h[1], h[2], tonumber(h[3] or '0') or 0, h[4]
  s.has_mods = tonumber(h[5] or '0') > 0
  s.has_sanctions = tonumber(h[6] or '0') > 0
  s.floor, s.idle_pushed = h[7], h[8]
end

local replies, changed = {}, {}
for i, m in ipairs(messages) do
  local s = m.stream
  local reply = nil
  if not s.status then
    reply = {'err', 'not_found'}
  elseif s.status ~= 'LIVE' then
    reply = {'err', 'stream_not_live'}
  elseif s.cleared and m.id <= s.cleared then
    reply = {'stale', s.cleared}
  else
    local role = role_of(s.streamer, s.mods_key, m.user, m.admin, not s.has_mods)
    if m.alert and role ~= 'streamer' then reply = {'err', 'forbidden'} end
    if not reply and role ~= 'streamer' and s.has_sanctions then
      reply = sanction_check(s.sanctions_key, m.user, now)
    end
    local slow = (role or reply) and 0 or s.slow
    if not reply and slow > 0 then
      local wait = redis.call('PTTL', m.slow_key)
      if wait > 0 then reply = {'err', 'slow_mode', wait} end
    end
    if not reply then
      -- The sender's log of accepted times, held for this batch (written back once, below).
      local log, refusal = nil, nil
      if m.counted then log, refusal = window_admit(users[m.user], role and privileged or limit, period, now) end
      if refusal then
        reply = refusal
      else
        if m.counted then
          users[m.user] = log
          changed[#changed + 1] = m.user
        end
        if slow > 0 then redis.call('SET', m.slow_key, '1', 'PX', slow * 1000) end
        s.messages[#s.messages + 1] = m.json
        s.frames[#s.frames + 1] = m.frame
        reply = {'ok'}
      end
    end
  end
  replies[i] = reply
end

window_save(prefix, period, now, users, changed)

local records = {}
for _, s in ipairs(streams) do
  local k = #s.messages
  if k > 0 then
    local count = redis.call('HINCRBY', s.key, 'message_count', k)
    keep_messages(s.recent_key, s.unflushed_key, s.messages, s.floor)
    -- The recent set may hold up to a tenth more than its size: trimmed each time the message
    -- count passes a tenth of it, so its length is not read per call.
    if math.floor(count / step) ~= math.floor((count - k) / step) then
      trim_recent(s.key, s.recent_key, recent_size)
    end
    publish_events(s.channel, nil, s.frames)
    idle_push_stepped(idle_key, s.key, s.id, s.idle_pushed, now)  -- an accepted message is activity
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
  redis.call('XADD', outbox_key, '*', unpack(fields))
end
return replies
