-- One moderation action: role checks, the change to live state, the record (outbox and the
-- stream's moderation log) and the broadcasts, together.
-- KEYS: stream hash, moderators, sanctions, recent set, deleted set, conns, outbox,
--       stream channel, moderation log, the actor's moderation rate
-- ARGV: prefix, channel, namespace, stream_id, action, actor, admin ('1'/'0'), target user,
--       message id, value (timeout end ms | watermark id | slow-mode seconds), record json,
--       pub/sub json (for moderators_changed: its head), pub/sub tail, ban order json,
--       log size, found ('1': the caller found the message in MySQL), rate limit, rate period
--       ms, count the rate here ('1'/'0')
-- Returns {'ok', moderators json}, an error, {'no_stream'} when the stream has no live state,
-- or {'missing'} when a message to delete is neither in the recent set nor among the
-- unflushed messages (the caller looks in MySQL and calls again with found = '1').
local prefix, channel, namespace, stream_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local action, actor, admin, target = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local h = redis.call('HMGET', KEYS[1], 'status', 'streamer_id', 'cleared_before')
if not h[1] then return {'no_stream'} end
if h[1] == 'ENDED' then return {'err', 'stream_not_live'} end
local streamer = h[2]
local role = role_of(streamer, KEYS[2], actor, admin)
local owner = role == 'streamer' or role == 'admin'
if action == 'add_moderator' or action == 'remove_moderator' then
  if not owner then
    return {'err', 'forbidden', false, 'Only the streamer or an admin may name moderators.'}
  end
elseif not role then
  return {'err', 'forbidden', false, "Only the stream's streamer, its moderators or an admin may do this."}
end

if target ~= '' then
  if target == streamer then
    return {'err', 'forbidden', false, 'The streamer cannot be the target of this action.'}
  end
  if target == actor and action ~= 'remove_moderator' then
    return {'err', 'forbidden', false, 'You cannot do this to yourself.'}
  end
end

local function is_mod(user) return redis.call('SISMEMBER', KEYS[2], user) == 1 end
local moderators = nil
local now = now_ms()
-- The actor's moderation rate: every action its role allows counts (here unless the caller
-- counted it in the actor's shard).
if ARGV[19] == '1' then
  local bad = rate_check(KEYS[10], tonumber(ARGV[17]), tonumber(ARGV[18]), now)
  if bad then return bad end
end

if action == 'delete_message' then
  local id = ARGV[9]
  if (h[3] and id <= h[3]) or redis.call('SISMEMBER', KEYS[5], id) == 1 then
    return {'err', 'not_found', false, 'No such message.'}
  end
  -- Its text in the recent set (taken out) or in the unflushed one (left for the flusher to
  -- write, hidden by the deleted set), else the caller's word that MySQL has it.
  local low = '[{"message_id":"' .. id .. '"'
  local high = low .. '\255'
  local found = redis.call('ZREMRANGEBYLEX', KEYS[4], low, high) > 0
    or #redis.call('ZRANGEBYLEX', KEYS[1] .. ':unflushed', low, high, 'LIMIT', 0, 1) > 0
  if not found and ARGV[16] ~= '1' then return {'missing'} end
  redis.call('SADD', KEYS[5], id)
elseif action == 'timeout_user' or action == 'ban_user' then
  if is_mod(target) then
    return {'err', 'forbidden', false, 'Moderators cannot be timed out or banned; remove them as moderator first.'}
  end
  local current = redis.call('HGET', KEYS[3], target)
  if current == 'ban' then return {'err', 'conflict', false, 'The user is already banned.'} end
  if action == 'timeout_user' then
    redis.call('HSET', KEYS[3], target, 't:' .. ARGV[10])
  else
    redis.call('HSET', KEYS[3], target, 'ban')
  end
elseif action == 'unban_user' then
  if redis.call('HDEL', KEYS[3], target) == 0 then
    return {'err', 'conflict', false, 'The user is neither banned nor timed out.'}
  end
elseif action == 'clear_chat' then
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[1], 'cleared_before', ARGV[10])
elseif action == 'set_slow_mode' then
  redis.call('HSET', KEYS[1], 'slow_mode', ARGV[10])
elseif action == 'add_moderator' then
  if is_banned(KEYS[3], target) then
    return {'err', 'conflict', false, 'The user is banned; lift the ban first.'}
  end
  redis.call('SADD', KEYS[2], target)
elseif action == 'remove_moderator' then
  redis.call('SREM', KEYS[2], target)
else
  return {'err', 'invalid'}
end

-- What the batched chat script reads to skip these lookups in streams that have none.
if action == 'add_moderator' or action == 'remove_moderator' then
  redis.call('HSET', KEYS[1], 'mod_count', redis.call('SCARD', KEYS[2]))
elseif action == 'timeout_user' or action == 'ban_user' or action == 'unban_user' then
  redis.call('HSET', KEYS[1], 'sanction_count', redis.call('HLEN', KEYS[3]))
end
redis.call('XADD', KEYS[7], '*', 't', 'moderation', 'd', ARGV[11])
redis.call('LPUSH', KEYS[9], ARGV[11])
redis.call('LTRIM', KEYS[9], 0, tonumber(ARGV[15]) - 1)
if action == 'add_moderator' or action == 'remove_moderator' then
  local list = redis.call('SMEMBERS', KEYS[2])
  table.sort(list)
  moderators = #list == 0 and '[]' or cjson.encode(list)
  redis.call(PUBLISH, KEYS[8], ARGV[12] .. moderators .. ARGV[13])
else
  redis.call(PUBLISH, KEYS[8], ARGV[12])
end
if action == 'ban_user' then
  -- An order on the stream's own channel: the workers with sockets in the room (the only ones
  -- subscribed) take the user's sockets out of it, before the viewer_left below goes out.
  redis.call(PUBLISH, KEYS[8], '!ban ' .. ARGV[14])
  -- The user's connections stop watching now.
  for _, member in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
    local _, _, viewer = split_member(member)
    if viewer == 'u:' .. target then
      redis.call('ZREM', KEYS[6], member)
      drop_conn(prefix, channel, namespace, stream_id, member, now)
    end
  end
end
return {'ok', moderators or false}
