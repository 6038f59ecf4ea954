-- The end of a shard's heal (hub.recovery): the shard's epoch marked healed if it still names
-- the life that was healed (Redis did not lose its data again meanwhile), and the heal's lock
-- released if this worker still holds it.
-- KEYS: epoch, heal lock
-- ARGV: life ('': the heal failed, the lock is only released), lock holder
local epoch_key, lock_key = KEYS[1], KEYS[2]
local life, holder = ARGV[1], ARGV[2]
if life ~= '' and redis.call('GET', epoch_key) == life then
  redis.call('SET', epoch_key, life .. ' healed')
end
if redis.call('GET', lock_key) == holder then redis.call('DEL', lock_key) end
return 0
