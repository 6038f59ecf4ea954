-- This worker's lease in the shard renewed for `ttl` ms; or, when it lapsed (the worker froze,
-- its loop stalled, Redis lost its data) or it has none yet, a new one: the worker then
-- re-asserts under it what it holds here (refresh.lua, hold.lua). And which of the streams
-- it watches here are no longer LIVE, so that it forgets them.
-- KEYS: the shard's leases, its lease counter, then the hashes of the streams watched here
-- ARGV: this worker's lease ('' for none yet), ttl ms, then the ids of those streams
-- Returns {'ok', lease, '1' renewed | '0' new, ids of the watched streams no longer LIVE}.
local leases_key, seq_key = KEYS[1], KEYS[2]
local hash_keys = slice(KEYS, 3)
local lease_n, ttl = ARGV[1], tonumber(ARGV[2])
local stream_ids = slice(ARGV, 3)
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
local gone = {}
for i, hash_key in ipairs(hash_keys) do
  if redis.call('HGET', hash_key, 'status') ~= 'LIVE' then gone[#gone + 1] = stream_ids[i] end
end
return {'ok', lease_n, renewed, gone}
