-- A new stream, LIVE or SCHEDULED: the streamer's create rate, then one LIVE stream at a time or
-- at most `scheduled max` SCHEDULED ones held (a scheduled stream expires unstarted at its time
-- plus the grace period).
-- KEYS: stream hash, streamer live key, streamer streams, streamer scheduled, create rate
-- ARGV: prefix, stream_id, status, created ms, create limit, create period ms, scheduled max,
--       unstarted expiry ms (SCHEDULED), streams kept, streams ttl s, then field/value pairs
local prefix, stream_id, status, created = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local bad = rate_check(KEYS[5], tonumber(ARGV[5]), tonumber(ARGV[6]), now)
if bad then return bad end
if status == 'LIVE' then
  local current = redis.call('GET', KEYS[2])
  if current and redis.call('HGET', prefix .. 'stream:' .. current, 'status') == 'LIVE' then
    return {'err', 'conflict', false, 'You already have a live stream.'}
  end
  redis.call('SET', KEYS[2], stream_id)
else
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[7]) then
    return {'err', 'conflict', false,
            'You have ' .. ARGV[7] .. ' scheduled streams; start or cancel one first.'}
  end
end
for i = 11, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'version', 1)
if status == 'SCHEDULED' then
  local expires = tonumber(ARGV[8])
  redis.call('PEXPIREAT', KEYS[1], expires)
  redis.call('ZADD', KEYS[4], expires, stream_id)
  redis.call('PEXPIREAT', KEYS[4], tonumber(redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')[2]))
end
redis.call('ZADD', KEYS[3], created, stream_id)
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[9]) - 1)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[10]))
if status == 'LIVE' then set_live_score(prefix, stream_id, 0) end
outbox(prefix .. 'outbox', 'stream', stream_record(prefix, stream_id))
return {'ok'}
