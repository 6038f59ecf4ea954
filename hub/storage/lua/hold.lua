-- This worker's open connections re-asserted in the sets that count them, under its new lease
-- (its old one lapsed: the worker froze, or Redis lost its data): a member still there is
-- re-scored, a missing one added again.
-- KEYS: the shard's leases, this worker's lease's registry, then the sets, one per connection
-- ARGV: prefix (names a lease's registry), this worker's lease, then (kind, id, socket id)
--       triples, one per set
local leases_key, held_key = KEYS[1], KEYS[2]
local prefix, lease_n = ARGV[1], ARGV[2]
local holder_keys, triples = slice(KEYS, 3), slice(ARGV, 3)
local shard, lease = {prefix = prefix, leases = leases_key}, {n = lease_n, held = held_key}
for i, holder in ipairs(holder_keys) do
  local kind, id, sid = triples[i * 3 - 2], triples[i * 3 - 1], triples[i * 3]
  hold(shard, lease, holder, kind, id, sid, redis.call('ZSCORE', holder, sid))
end
return {'ok'}
