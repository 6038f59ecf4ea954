-- A new stream, LIVE or SCHEDULED.
-- KEYS: stream hash, streamer live key, streamer streams
-- ARGV: prefix, stream_id, status, created ms, then field/value pairs
local prefix, stream_id, status, created = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if status == 'LIVE' then
  local current = redis.call('GET', KEYS[2])
  if current and redis.call('HGET', prefix .. 'stream:' .. current, 'status') == 'LIVE' then
    return {'err', 'conflict'}
  end
  redis.call('SET', KEYS[2], stream_id)
end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'version', 1)
redis.call('ZADD', KEYS[3], created, stream_id)
if status == 'LIVE' then set_live_score(prefix, stream_id, 0) end
outbox(prefix .. 'outbox', 'stream', stream_record(prefix, stream_id))
return {'ok'}
