-- Shared by the scripts, loaded after the settings (COALESCE_ABOVE, COALESCE_MS, LIVE_IDLE_MS,
-- PUBLISH), the wire format's functions (hub.frames: frame, publish_events, publish_order,
-- ORDER_CLOSE) and the key builders (hub.storage.keys: key_stream(prefix, id), key_conns, …), see
-- hub.storage.scripts.
-- Conventions: a script returns {'ok', ...} or a refusal, fail(...).

-- A refusal, as hub.storage.scripts.ScriptError reads it: its error code, the ms to wait
-- before retrying (or none) and a message for people (or none: the code's own).
local function fail(code, retry_after_ms, message)
  return {'err', code, retry_after_ms or false, message}
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function hash_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Values `first` to `last` (default: the end) of KEYS or ARGV, copied one by one: unlike
-- unpack, for any number of them.
local function slice(t, first, last)
  local out = {}
  for i = first, last or #t do out[#out + 1] = t[i] end
  return out
end

-- The shard-wide keys a stream's helpers touch, and the prefix that names the keys a script
-- builds itself (a live category's set, a lease's registry). `leases` is the one hold puts a
-- lease back in; `due` (viewer events kept back) and `idle` (when idle streams end) are those of
-- start_watching and stop_watching.
local function shard_keys(prefix, live, outbox_key, leases, due, idle)
  return {prefix = prefix, live = live, outbox = outbox_key, leases = leases, due = due, idle = idle}
end

-- Activity pushes a LIVE stream's idle end forward (HUB_LIVE_IDLE_END): only if it is in the
-- index (not while its streamer watches, not once ended), never back.
local function idle_push(idle_key, stream_id, now)
  if LIVE_IDLE_MS > 0 then redis.call('ZADD', idle_key, 'XX', 'GT', now + LIVE_IDLE_MS, stream_id) end
end

-- The same for chat, which comes often: pushed at most once per IDLE_STEP (a sixtieth of the
-- idle time), the stream hash's `idle_pushed_ms` (`pushed`, read with the stream's state)
-- saying when it last was, and the end set a step further, so that it still comes no earlier
-- than the idle time after the last message, and at most a step later.
local IDLE_STEP = math.floor(LIVE_IDLE_MS / 60)
local function idle_push_stepped(idle_key, hash_key, stream_id, pushed, now)
  if LIVE_IDLE_MS == 0 or now - (tonumber(pushed) or 0) < IDLE_STEP then return end
  redis.call('ZADD', idle_key, 'XX', 'GT', now + LIVE_IDLE_MS + IDLE_STEP, stream_id)
  redis.call('HSET', hash_key, 'idle_pushed_ms', now)
end

-- One stream's keys and channel, built from its id: for a script that learns the id itself (the
-- sweep walks the live set). A script given the stream's keys makes the same table of them.
local function stream_keys(prefix, stream_id)
  return {id = stream_id, hash = key_stream(prefix, stream_id), conns = key_conns(prefix, stream_id),
          viewers = key_viewers(prefix, stream_id), unique = key_unique(prefix, stream_id),
          room = key_room(prefix, stream_id)}
end

local function outbox(key, kind, json)
  redis.call('XADD', key, '*', 't', kind, 'd', json)
end

-- The whole stream row, as the flusher upserts it (absolute figures, with a version).
local function stream_record(hash_key, unique_key)
  local t = hash_table(redis.call('HGETALL', hash_key))
  t['unique_viewers'] = redis.call('SCARD', unique_key)
  return cjson.encode(t)
end

local function bump(skey, now)
  redis.call('HINCRBY', skey, 'version', 1)
  redis.call('HSET', skey, 'updated_at', now)
end

-- A LIVE stream's place in its shard's live set and in its category's, by viewers.
local function set_live_score(shard, stream, count)
  if redis.call('HGET', stream.hash, 'status') ~= 'LIVE' then return end
  redis.call('ZADD', shard.live, count, stream.id)
  local category = redis.call('HGET', stream.hash, 'category')
  if category and category ~= '' then
    redis.call('ZADD', key_live_category(shard.prefix, category), count, stream.id)
  end
end

-- member = session_id|joined_ms|viewer ; viewer = u:<user id> or a:<socket id>
local function split_member(member)
  local session, joined, viewer = string.match(member, '^([^|]*)|([^|]*)|(.*)$')
  return session, tonumber(joined), viewer
end

local function viewer_user(viewer)
  if string.sub(viewer, 1, 2) == 'u:' then return string.sub(viewer, 3) end
  return nil
end

local function session_record(outbox_key, stream_id, member, left)
  local session, joined, viewer = split_member(member)
  local user = viewer_user(viewer)
  outbox(outbox_key, 'session', cjson.encode({
    session_id = session, stream_id = stream_id, user_id = user or cjson.null,
    joined_at = joined, left_at = left,
    watch_seconds = math.max(0, math.floor((left - joined) / 1000))}))
end

-- A viewer event to the room. In a stream of more than COALESCE_ABOVE viewers, at most one per
-- COALESCE_MS: an event inside that interval is not sent but kept, the stream indexed in the
-- shard's due set by when the interval ends, and the sweep (due.lua) sends the last one kept
-- with the count of that moment. An entry left after a later event went out is dropped there.
local function viewer_event(shard, stream, event, count, user, username, skip)
  local data = {stream_id = stream.id, viewer_count = count, user_id = user or cjson.null}
  if event == 'viewer_joined' then data.username = username or cjson.null end
  if count > COALESCE_ABOVE then
    local now = now_ms()
    local last = tonumber(redis.call('HGET', stream.hash, 'viewer_event_ms') or '0')
    if now - last < COALESCE_MS then
      redis.call('HSET', stream.hash, 'viewer_event_kept',
        cjson.encode({event, user or cjson.null, username or cjson.null, skip or cjson.null}))
      redis.call('ZADD', shard.due, last + COALESCE_MS, stream.id)
      return
    end
    redis.call('HSET', stream.hash, 'viewer_event_ms', now)
    redis.call('HDEL', stream.hash, 'viewer_event_kept')
  end
  publish_events(stream.room, skip, {frame(event, data)})
end

-- The kept viewer event of a large stream, once its interval has passed (see viewer_event;
-- due.lua takes the stream out of the due set). Whether it sent one.
local function flush_viewer_event(stream, now)
  local h = redis.call('HMGET', stream.hash, 'viewer_event_kept', 'viewer_event_ms')
  if not h[1] or now - tonumber(h[2] or '0') < COALESCE_MS then return false end
  local kept = cjson.decode(h[1])
  local data = {stream_id = stream.id, viewer_count = redis.call('HLEN', stream.viewers),
                user_id = kept[2]}
  if kept[1] == 'viewer_joined' then data.username = kept[3] end
  redis.call('HSET', stream.hash, 'viewer_event_ms', now)
  redis.call('HDEL', stream.hash, 'viewer_event_kept')
  local skip = kept[4]
  if skip == cjson.null then skip = nil end
  publish_events(stream.room, skip, {frame(kept[1], data)})
  return true
end

-- Whether `viewer` is the LIVE stream's streamer.
local function is_streamer(stream, viewer)
  if string.sub(viewer, 1, 2) ~= 'u:' then return false end
  local h = redis.call('HMGET', stream.hash, 'status', 'streamer_id')
  return h[1] == 'LIVE' and h[2] == string.sub(viewer, 3)
end

-- Presence under leases (hub.domain.presence): a stream's conns set and the user and address
-- sets score each member by the number of the lease that holds it, and the lease's registry
-- (key_lease_held) lists what it holds, one entry per membership: its kind (c a stream's
-- conns, u a user's, a an address's), the id's length, ':', the id, then the member, so that
-- no id can make another entry.
local function lease_entry(kind, id, member)
  return kind .. #id .. ':' .. id .. member
end

-- An entry's kind, id and member.
local function read_entry(entry)
  local kind, length, at = string.match(entry, '^(%a)(%d+):()')
  local stop = at + tonumber(length)
  return kind, string.sub(entry, at, stop - 1), string.sub(entry, stop)
end

-- `member` of set `key` held under `lease` ({n = number, held = its registry}), registered
-- there; `old`, its score until now (or false), names the registry it leaves. The lease is put
-- back in the shard's leases (score 0: lapsed) should the sweep have dropped it meanwhile, so
-- that what it holds is swept again rather than left behind.
local function hold(shard, lease, key, kind, id, member, old)
  if old and tonumber(old) == tonumber(lease.n) then return end
  redis.call('ZADD', key, lease.n, member)
  local entry = lease_entry(kind, id, member)
  if old then redis.call('SREM', key_lease_held(shard.prefix, old), entry) end
  redis.call('SADD', lease.held, entry)
  redis.call('ZADD', shard.leases, 'NX', 0, lease.n)
end

-- `member` out of set `key` and out of its lease's registry; whether it was there.
local function unhold(prefix, key, kind, id, member)
  local lease = redis.call('ZSCORE', key, member)
  if not lease then return false end
  redis.call('ZREM', key, member)
  redis.call('SREM', key_lease_held(prefix, lease), lease_entry(kind, id, member))
  return true
end

-- A connection stops watching (already out of the conns set): its viewing session goes to the
-- outbox, and its viewer leaves when it was the viewer's last connection. Returns the viewers.
local function stop_watching(shard, stream, member, now)
  local _, _, viewer = split_member(member)
  session_record(shard.outbox, stream.id, member, now)
  local left = redis.call('HINCRBY', stream.viewers, viewer, -1)
  if left > 0 then return redis.call('HLEN', stream.viewers) end
  redis.call('HDEL', stream.viewers, viewer)
  local count = redis.call('HLEN', stream.viewers)
  set_live_score(shard, stream, count)
  -- The streamer's last socket stopped watching: the idle clock runs again.
  if LIVE_IDLE_MS > 0 and is_streamer(stream, viewer) then
    redis.call('ZADD', shard.idle, now + LIVE_IDLE_MS, stream.id)
  end
  viewer_event(shard, stream, 'viewer_left', count, viewer_user(viewer))
  return count
end

-- A connection starts watching, held under `lease` (see hold): its viewer joins when it is the
-- viewer's first connection. Returns the viewers.
local function start_watching(shard, stream, member, lease, sid, username)
  local _, _, viewer = split_member(member)
  hold(shard, lease, stream.conns, 'c', stream.id, member, false)
  local n = redis.call('HINCRBY', stream.viewers, viewer, 1)
  local count = redis.call('HLEN', stream.viewers)
  if n > 1 then return count end
  redis.call('SADD', stream.unique, viewer)
  local peak = tonumber(redis.call('HGET', stream.hash, 'peak_viewers') or '0')
  if count > peak then redis.call('HSET', stream.hash, 'peak_viewers', count) end
  set_live_score(shard, stream, count)
  -- A socket of the streamer watches: the stream is not idle while it does.
  if LIVE_IDLE_MS > 0 and is_streamer(stream, viewer) then redis.call('ZREM', shard.idle, stream.id) end
  local user = viewer_user(viewer)
  viewer_event(shard, stream, 'viewer_joined', count, user, (user and username ~= '') and username or nil, sid)
  return count
end

local function live_check(skey)
  local status = redis.call('HGET', skey, 'status')
  if not status then return fail('not_found') end
  if status ~= 'LIVE' then return fail('stream_not_live') end
  return nil
end

-- Rate limits are sliding windows, exact: at most `limit` events accepted in any `period_ms`,
-- each refusal with the time until the oldest accepted event leaves the window.

-- A user's chat log held for one call: `n` accepted times still in the window, the older ones
-- as stored (`kept`, 't1,t2,…' oldest first) and those accepted during this call (`added`).
-- Whether one more is accepted now: the log with it, or nil and the refusal. At most `limit`
-- times are ever in the window, so when it is full the oldest of them is the one to wait for.
local function window_admit(log, limit, period_ms, now)
  if log.n >= limit then
    local oldest = tonumber(string.match(log.kept, '^%d+') or log.added[1])
    return nil, fail('rate_limited', math.max(1, oldest + period_ms - now))
  end
  log.n = log.n + 1
  log.added[#log.added + 1] = now
  return log, nil
end

-- A rate whose log is a sorted set of its own (members unique per event, scored by time), kept
-- for one period after its last event.
local function rate_check(key, limit, period_ms, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - period_ms)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    return fail('rate_limited', math.max(1, tonumber(oldest[2]) + period_ms - now))
  end
  redis.call('ZADD', key, now, now .. ':' .. count)
  redis.call('PEXPIRE', key, period_ms)
  return nil
end

-- The chat rate's state: each user's log of accepted times ('n|t1,t2,…', ms, oldest first)
-- in one hash per period window (field = user), key_chat_rate_window(prefix, the window's
-- number). A log written two windows ago holds only times that have left the window, so older
-- hashes simply expire. Fills `logs` (user -> log, see window_admit) for the users listed in
-- `order`: this window's hash, then the previous one for the others. Only the times that left
-- the window are looked at, from the oldest, so a log costs the same whatever its limit.
local function window_logs(prefix, period, now, logs, order)
  if #order == 0 then return end
  local window = math.floor(now / period)
  local found = redis.call('HMGET', key_chat_rate_window(prefix, window), unpack(order))
  local missing, texts = {}, {}
  for i, user in ipairs(order) do
    if found[i] then texts[user] = found[i] else missing[#missing + 1] = user end
  end
  if #missing > 0 then
    local older = redis.call('HMGET', key_chat_rate_window(prefix, window - 1), unpack(missing))
    for j, user in ipairs(missing) do texts[user] = older[j] end
  end
  local since = now - period
  for _, user in ipairs(order) do
    local n, kept = 0, ''
    local text = texts[user]
    if text then
      local count, at = string.match(text, '^(%d+)|()')
      n = tonumber(count) or 0
      while n > 0 do
        local stop = string.find(text, ',', at, true)
        if tonumber(string.sub(text, at, (stop or 0) - 1)) > since then break end
        n = n - 1
        at = stop and stop + 1 or #text + 1
      end
      if n > 0 then kept = string.sub(text, at) end
    end
    logs[user] = {n = n, kept = kept, added = {}}
  end
end

-- Writes back the logs of the users in `changed` (a list, repeats allowed).
local function window_save(prefix, period, now, logs, changed)
  if #changed == 0 then return end
  local key = key_chat_rate_window(prefix, math.floor(now / period))
  local flat, seen = {}, {}
  for _, user in ipairs(changed) do
    if not seen[user] then
      seen[user] = true
      local log = logs[user]
      local added = table.concat(log.added, ',')
      flat[#flat + 1] = user
      flat[#flat + 1] = log.n .. '|' .. log.kept .. ((log.kept ~= '' and added ~= '') and ',' or '') .. added
    end
  end
  -- A window's hash gets its expiry when it gains a user (so, first of all, when it is new).
  if redis.call('HSET', key, unpack(flat)) > 0 then
    redis.call('PEXPIRE', key, period * 2 + 1000)
  end
end

local function is_banned(sanctions_key, user)
  return user ~= nil and redis.call('HGET', sanctions_key, user) == 'ban'
end

-- A user's ban or running timeout in one stream, as the refusal it stands for.
local function sanction_check(key, user, now)
  local s = redis.call('HGET', key, user)
  if not s then return nil end
  if s == 'ban' then return fail('banned') end
  local ends = tonumber(string.sub(s, 3))
  if ends and ends > now then return fail('timed_out', ends - now) end
  return nil
end

-- The user's standing in a stream: 'streamer', 'admin', 'moderator', or nil for a viewer.
-- `no_mods`: the stream is known to have no moderators (its mod_count), so none is looked up.
local function role_of(streamer, mods_key, user, is_admin, no_mods)
  if streamer == user then return 'streamer' end
  if is_admin == '1' then return 'admin' end
  if not no_mods and redis.call('SISMEMBER', mods_key, user) == 1 then return 'moderator' end
  return nil
end

-- A message's JSON text starts with its id ('{"message_id":"' then 36 characters), so sorted
-- sets of message texts all scored 0 keep them in id order.
local function message_id_of(json)
  return string.sub(json, 16, 51)
end

-- One stream's newly accepted messages (JSON texts): all into its unflushed set (the flusher
-- takes each out once MySQL has it), and those above the recent floor (the highest id ever
-- trimmed) into its recent set, which thus holds every kept message above the floor. A lower
-- id, from a worker whose message reached Redis late, would be trimmed at once: it is read
-- from the unflushed set, then from MySQL.
local function keep_messages(recent_key, unflushed_key, messages, floor)
  local all, above = {}, {}
  for _, m in ipairs(messages) do
    all[#all + 1] = 0
    all[#all + 1] = m
    if not floor or message_id_of(m) > floor then
      above[#above + 1] = 0
      above[#above + 1] = m
    end
  end
  redis.call('ZADD', unflushed_key, unpack(all))
  if #above > 0 then redis.call('ZADD', recent_key, unpack(above)) end
end

-- The recent set trimmed back to `size`, the lowest ids first; the floor (in the stream hash)
-- rises to the highest id trimmed.
local function trim_recent(hash_key, recent_key, size)
  local cut = redis.call('ZCARD', recent_key) - size
  if cut <= 0 then return end
  local top = redis.call('ZRANGE', recent_key, cut - 1, cut - 1)[1]
  redis.call('ZREMRANGEBYRANK', recent_key, 0, cut - 1)
  redis.call('HSET', hash_key, 'recent_floor', message_id_of(top))
end
