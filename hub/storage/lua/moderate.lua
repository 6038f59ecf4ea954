-- One moderation action: role checks, the change to live state, the record (outbox and the
-- stream's moderation log) and the broadcasts, together. The action comes as its rules from
-- hub.domain.payloads.MODERATION: the change to make, who may make it, whether on oneself.
-- KEYS: stream hash, moderators, sanctions, recent set, unflushed set, deleted set, conns,
--       viewers, room channel, moderation log, the actor's moderation rate, live set, outbox,
--       viewer events due, idle index
-- ARGV: prefix (names the category's live set), stream id, change (delete | timeout | ban |
--       lift | clear | slow | add_moderator | remove_moderator), owner only ('1'/'0'), on self
--       ('1'/'0'), actor, admin ('1'/'0'), target user, message id, value (a timeout's end
--       ms, the clear watermark id, or slow-mode seconds), record json, room message head and
--       tail (the moderators go between them after a change of moderators), ban order ('' if
--       none), log size, found ('1': the caller found the message in MySQL), rate limit, rate
--       period ms, count the rate here ('1'/'0')
-- Returns {'ok', moderators json | false}, an error, {'no_stream'} when the stream has no live
-- state, or {'missing'} when a message to delete is neither in the recent set nor among the
-- unflushed messages (the caller looks in MySQL and calls again with found = '1').
local stream_key, mods_key, sanctions_key, recent_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local unflushed_key, deleted_key, conns_key, viewers_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local channel, log_key, rate_key, live_key, outbox_key = KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local due_key, idle_key = KEYS[14], KEYS[15]
local prefix, stream_id = ARGV[1], ARGV[2]
local change, owner_only, on_self = ARGV[3], ARGV[4] == '1', ARGV[5] == '1'
local actor, admin, target, message_id, value = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local record_json, room_head, room_tail, ban_order = ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local log_size, found = tonumber(ARGV[15]), ARGV[16] == '1'
local rate_limit, rate_period, count_rate = tonumber(ARGV[17]), tonumber(ARGV[18]), ARGV[19] == '1'
local of_moderators = change == 'add_moderator' or change == 'remove_moderator'
local of_sanctions = change == 'timeout' or change == 'ban' or change == 'lift'

local h = redis.call('HMGET', stream_key, 'status', 'streamer_id', 'cleared_before')
if not h[1] then return {'no_stream'} end
if h[1] == 'ENDED' then return {'err', 'stream_not_live'} end
local streamer = h[2]
local role = role_of(streamer, mods_key, actor, admin)
local owner = role == 'streamer' or role == 'admin'
if owner_only then
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
  if target == actor and not on_self then
    return {'err', 'forbidden', false, 'You cannot do this to yourself.'}
  end
end

local function is_mod(user) return redis.call('SISMEMBER', mods_key, user) == 1 end
local now = now_ms()
-- The actor's moderation rate: every action its role allows counts (here unless the caller
-- counted it in the actor's shard).
if count_rate then
  local bad = rate_check(rate_key, rate_limit, rate_period, now)
  if bad then return bad end
end

if change == 'delete' then
  if (h[3] and message_id <= h[3]) or redis.call('SISMEMBER', deleted_key, message_id) == 1 then
    return {'err', 'not_found', false, 'No such message.'}
  end
  -- Its text in the recent set (taken out) or in the unflushed one (left for the flusher to
  -- write, hidden by the deleted set), else the caller's word that MySQL has it.
  local low = '[{"message_id":"' .. message_id .. '"'
  local high = low .. '\255'
  local held = redis.call('ZREMRANGEBYLEX', recent_key, low, high) > 0
    or #redis.call('ZRANGEBYLEX', unflushed_key, low, high, 'LIMIT', 0, 1) > 0
  if not held and not found then return {'missing'} end
  redis.call('SADD', deleted_key, message_id)
elseif change == 'timeout' or change == 'ban' then
  if is_mod(target) then
    return {'err', 'forbidden', false, 'Moderators cannot be timed out or banned; remove them as moderator first.'}
  end
  if redis.call('HGET', sanctions_key, target) == 'ban' then
    return {'err', 'conflict', false, 'The user is already banned.'}
  end
  redis.call('HSET', sanctions_key, target, change == 'ban' and 'ban' or 't:' .. value)
elseif change == 'lift' then
  if redis.call('HDEL', sanctions_key, target) == 0 then
    return {'err', 'conflict', false, 'The user is neither banned nor timed out.'}
  end
elseif change == 'clear' then
  redis.call('DEL', recent_key)
  redis.call('HSET', stream_key, 'cleared_before', value)
elseif change == 'slow' then
  redis.call('HSET', stream_key, 'slow_mode', value)
elseif change == 'add_moderator' then
  if is_banned(sanctions_key, target) then
    return {'err', 'conflict', false, 'The user is banned; lift the ban first.'}
  end
  redis.call('SADD', mods_key, target)
elseif change == 'remove_moderator' then
  redis.call('SREM', mods_key, target)
else
  return {'err', 'invalid'}
end

-- What the batched chat script reads to skip these lookups in streams that have none.
if of_moderators then
  redis.call('HSET', stream_key, 'mod_count', redis.call('SCARD', mods_key))
elseif of_sanctions then
  redis.call('HSET', stream_key, 'sanction_count', redis.call('HLEN', sanctions_key))
end
redis.call('XADD', outbox_key, '*', 't', 'moderation', 'd', record_json)
redis.call('LPUSH', log_key, record_json)
redis.call('LTRIM', log_key, 0, log_size - 1)
local moderators = nil
if of_moderators then
  local list = redis.call('SMEMBERS', mods_key)
  table.sort(list)
  moderators = #list == 0 and '[]' or cjson.encode(list)
end
redis.call(PUBLISH, channel, room_head .. (moderators or '') .. room_tail)
if ban_order ~= '' then
  -- An order on the stream's own channel: the workers with sockets in the room (the only ones
  -- subscribed) take the user's sockets out of it, before the viewer_left below goes out.
  publish_order(channel, ban_order)
  -- The user's connections stop watching now.
  local shard = shard_keys(prefix, live_key, outbox_key, nil, due_key, idle_key)
  local stream = {id = stream_id, hash = stream_key, conns = conns_key, viewers = viewers_key, room = channel}
  for _, member in ipairs(redis.call('ZRANGE', conns_key, 0, -1)) do
    local _, _, viewer = split_member(member)
    if viewer == 'u:' .. target then
      unhold(prefix, conns_key, 'c', stream_id, member)
      stop_watching(shard, stream, member, now)
    end
  end
end
return {'ok', moderators or false}
