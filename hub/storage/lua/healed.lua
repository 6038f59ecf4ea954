-- The end of a shard's heal (hub.recovery): the shard's epoch marked healed if it still names
-- the life that was healed (Redis did not lose its data again meanwhile), and the heal's lock
-- released if this worker still holds it.
-- KEYS: epoch, heal lock
-- ARGV: life ('': the heal failed, the lock is only released), lock holder
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1] .. ' healed')
end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return 0
