-- A connection closes: out of the set that counts it (an address's or a user's) and out of
-- its lease's registry.
-- KEYS: the set
-- ARGV: prefix (names a lease's registry), kind ('a' an address, 'u' a user), the address or
--       user id, socket id
local holder_key = KEYS[1]
local prefix, kind, id, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
unhold(prefix, holder_key, kind, id, sid)
return {'ok'}
