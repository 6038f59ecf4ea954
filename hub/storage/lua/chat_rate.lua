-- The chat rate of senders whose rate state is in this shard while their messages go to
-- streams of other shards (with shards, on Redis Cluster, where one call holds one slot's
-- keys): counted here first, then the messages go to their streams' shards uncounted.
-- KEYS: the rate window key prefix (the window number follows it)
-- ARGV: period ms, then (user id, limit) pairs
-- Returns one reply per pair: {'ok'} or {'err', 'rate_limited', retry ms}.
local rate_prefix, period = KEYS[1], tonumber(ARGV[1])
local now = now_ms()
local users, order = {}, {}
for i = 2, #ARGV, 2 do
  if users[ARGV[i]] == nil then
    users[ARGV[i]] = false
    order[#order + 1] = ARGV[i]
  end
end
window_logs(rate_prefix, period, now, users, order)
local replies, changed = {}, {}
for i = 2, #ARGV, 2 do
  local user = ARGV[i]
  local log, refusal = window_admit(users[user], tonumber(ARGV[i + 1]), period, now)
  if refusal then
    replies[#replies + 1] = refusal
  else
    users[user] = log
    changed[#changed + 1] = user
    replies[#replies + 1] = {'ok'}
  end
end
window_save(rate_prefix, period, now, users, changed)
return replies
