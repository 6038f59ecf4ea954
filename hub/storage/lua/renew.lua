-- This worker's lease in the shard renewed for `ttl` ms; or, when it lapsed (the worker froze,
-- its loop stalled, Redis lost its data) or it has none yet, a new one: the worker then
-- re-asserts under it what it holds here (refresh.lua, hold.lua). And the streams of the shard
-- that ended since the worker's last renewal, so that it forgets those it watches should it have
-- missed their room's close order: the cost follows the ends, not the streams watched.
-- KEYS: the shard's leases, its lease counter, its recently ended streams
-- ARGV: this worker's lease ('' for none yet), ttl ms, the time of its last renewal here (ms,
--       from the reply before; '' for none)
-- Returns {'ok', lease, '1' renewed | '0' new, ids of the streams ended since, now (ms)}.
local leases_key, seq_key, ended_key = KEYS[1], KEYS[2], KEYS[3]
local lease_n, ttl, since = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local renewed = '0'
local expiry = lease_n ~= '' and redis.call('ZSCORE', leases_key, lease_n)
if expiry and tonumber(expiry) > now then
  renewed = '1'
else
  -- A number no lease in the set has: after Redis lost its data the counter starts again,
  -- while a worker may have put its old lease back (hold in common.lua) meanwhile.
  repeat
    lease_n = tostring(redis.call('INCR', seq_key))
  until not redis.call('ZSCORE', leases_key, lease_n)
end
redis.call('ZADD', leases_key, now + ttl, lease_n)
-- From the last renewal's time on, that time included: an end in the same millisecond is read
-- twice rather than missed (forgetting a stream twice does nothing).
local ended = {}
if since ~= '' then ended = redis.call('ZRANGEBYSCORE', ended_key, since, '+inf') end
return {'ok', lease_n, renewed, ended, now}
