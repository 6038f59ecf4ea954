-- One dead letter back into its shard's outbox (python -m hub outbox replay): its record (t, d)
-- appended anew and the dead letter deleted, together. Nothing when it is gone (replayed already).
-- KEYS: the shard's dead letters, the shard's outbox
-- ARGV: the dead letter's id
-- Returns the new outbox entry's id, or false.
local dead, outbox = KEYS[1], KEYS[2]
local id = ARGV[1]
local found = redis.call('XRANGE', dead, id, id)
if #found == 0 then return false end
local fields, record = found[1][2], {}
for i = 1, #fields, 2 do
  if fields[i] == 't' or fields[i] == 'd' then
    record[#record + 1] = fields[i]
    record[#record + 1] = fields[i + 1]
  end
end
if #record == 0 then record = {'d', ''} end
local entry = redis.call('XADD', outbox, '*', unpack(record))
redis.call('XDEL', dead, id)
return entry
