-- Messages MySQL now holds, taken out of their streams' unflushed sets (the flusher, in the
-- transaction that acknowledges their outbox entries).
-- KEYS: the unflushed set of each stream
-- ARGV: for each key in turn, the number of its message ids, then the ids
local at = 1
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[at])
  for j = at + 1, at + n do
    local low = '[{"message_id":"' .. ARGV[j] .. '"'
    redis.call('ZREMRANGEBYLEX', key, low, low .. '\255')
  end
  at = at + n + 1
end
return 0
