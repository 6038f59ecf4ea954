-- The sweep of a lapsed lease (its worker died, froze or stopped): a bounded chunk of what it
-- holds taken out of its registry, and each membership still held under it removed (one
-- re-asserted since under a newer lease is scored by that one and stays); a connection that
-- stops watching that way leaves the stream as any (session record, viewer_left). Once the
-- registry is empty, the lease goes. What is held is learned from the registry, so its keys are
-- built here (key_* from hub.storage.keys).
-- KEYS: the shard's leases, live set, outbox, viewer events due, idle index
-- ARGV: prefix, most entries per call, the lease to sweep ('' for the lapsed one with the
--       lowest expiry, if any)
-- Returns {'ok', connections that stopped watching, '1' when more is left to sweep | '0'} (of
-- the lease given, or of any lapsed one).
local leases_key, live_key, outbox_key, due_key, idle_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, most, given = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local lease_n = given
if lease_n == '' then
  lease_n = redis.call('ZRANGEBYSCORE', leases_key, '-inf', now, 'LIMIT', 0, 1)[1]
  if not lease_n then return {'ok', 0, '0'} end
end
local shard = shard_keys(prefix, live_key, outbox_key, leases_key, due_key, idle_key)
local held_key = key_lease_held(prefix, lease_n)
local function key_of(kind, id)
  if kind == 'c' then return key_conns(prefix, id) end
  if kind == 'u' then return key_user_conns(prefix, id) end
  return key_address_conns(prefix, id)
end
local swept = 0
for _, entry in ipairs(redis.call('SPOP', held_key, most)) do
  local kind, id, member = read_entry(entry)
  local key = key_of(kind, id)
  local score = redis.call('ZSCORE', key, member)
  if score and tonumber(score) == tonumber(lease_n) then
    redis.call('ZREM', key, member)
    if kind == 'c' then
      stop_watching(shard, stream_keys(prefix, id), member, now)
      swept = swept + 1
    end
  end
end
if redis.call('EXISTS', held_key) == 1 then return {'ok', swept, '1'} end
redis.call('ZREM', leases_key, lease_n)
if given ~= '' then return {'ok', swept, '0'} end
local more = #redis.call('ZRANGEBYSCORE', leases_key, '-inf', now, 'LIMIT', 0, 1) > 0
return {'ok', swept, more and '1' or '0'}
