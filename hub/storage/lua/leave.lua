-- KEYS: conns
-- ARGV: prefix, channel, namespace, stream_id, member
local prefix, channel, namespace, stream_id, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('ZREM', KEYS[1], member) == 0 then return {'ok', 0} end
return {'ok', drop_conn(prefix, channel, namespace, stream_id, member, now_ms())}
