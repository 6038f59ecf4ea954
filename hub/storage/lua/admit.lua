-- A new connection: the client address's connection rate, then the open connections of the
-- address or of the user (a sorted set of socket ids, each scored by the lease that holds it).
-- KEYS: the set that counts the connection, the shard's leases, this worker's lease's
--       registry, the address's rate key (when checked)
-- ARGV: prefix (names a lease's registry), kind ('a' an address, 'u' a user), the address or
--       user id, socket id, this worker's lease, the most open connections the set allows,
--       retry after ms (when full), check the rate ('1'/'0'), rate limit, rate period ms
local holder_key, leases_key, held_key, rate_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, kind, id, sid, lease_n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local most, retry_ms, check_rate = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] == '1'
local rate_limit, period_ms = tonumber(ARGV[9]), tonumber(ARGV[10])
if check_rate then
  local bad = rate_check(rate_key, rate_limit, period_ms, now_ms())
  if bad then return bad end
end
-- A lapsed lease's members count until its sweep takes them out (within HUB_REAP_INTERVAL).
if redis.call('ZCARD', holder_key) >= most then return fail('rate_limited', retry_ms) end
local shard = {prefix = prefix, leases = leases_key}
hold(shard, {n = lease_n, held = held_key}, holder_key, kind, id, sid,
     redis.call('ZSCORE', holder_key, sid))
return {'ok'}
