-- The outbox's consumers idle longer than a while with nothing pending, removed from its group
-- (the flusher, at most once a minute). Looked at and removed in one step: a consumer that took
-- an entry in between and were then removed would take that entry's delivery with it.
-- KEYS: the outbox
-- ARGV: the consumer group, the idle time (ms) beyond which a consumer goes, the caller's own
--       consumer (never removed)
-- Returns the names of the consumers removed.
local outbox = KEYS[1]
local group, idle_ms, own = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local removed = {}
for _, flat in ipairs(redis.call('XINFO', 'CONSUMERS', outbox, group)) do
  local c = {}
  for i = 1, #flat, 2 do c[flat[i]] = flat[i + 1] end
  if c.name ~= own and c.pending == 0 and c.idle > idle_ms then
    redis.call('XGROUP', 'DELCONSUMER', outbox, group, c.name)
    removed[#removed + 1] = c.name
  end
end
return removed
