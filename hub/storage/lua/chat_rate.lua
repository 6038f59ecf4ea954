-- The chat rate of senders whose rate state is in this shard while their messages go to
-- streams of other shards (with shards, on Redis Cluster, where one call holds one slot's
-- keys): counted here first, then the messages go to their streams' shards uncounted.
-- KEYS: the shard's prefix, which names the chat rate's window hashes (their numbers come from
--       Redis's clock, so this script names them): given as a key, its hash tag routes the
--       call to the shard's node
-- ARGV: period ms, then (user id, limit) pairs
-- Returns one reply per pair: {'ok'} or {'err', 'rate_limited', retry ms}.
local prefix, period = KEYS[1], tonumber(ARGV[1])
local asks = {}
for i = 2, #ARGV, 2 do asks[#asks + 1] = {user = ARGV[i], limit = tonumber(ARGV[i + 1])} end

local now = now_ms()
local users, order = {}, {}
for _, ask in ipairs(asks) do
  if users[ask.user] == nil then
    users[ask.user] = false
    order[#order + 1] = ask.user
  end
end
window_logs(prefix, period, now, users, order)
local replies, changed = {}, {}
for _, ask in ipairs(asks) do
  local log, refusal = window_admit(users[ask.user], ask.limit, period, now)
  if refusal then
    replies[#replies + 1] = refusal
  else
    users[ask.user] = log
    changed[#changed + 1] = ask.user
    replies[#replies + 1] = {'ok'}
  end
end
window_save(prefix, period, now, users, changed)
return replies
