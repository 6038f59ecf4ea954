-- A new stream, LIVE or SCHEDULED: the streamer's create rate, then one LIVE stream at a time or
-- at most `scheduled max` SCHEDULED ones held (a scheduled stream expires unstarted at its time
-- plus the grace period).
-- KEYS: stream hash, unique set, streamer live key, streamer streams, streamer scheduled,
--       create rate, live set, outbox, idle index
-- ARGV: prefix (names the streamer's current stream and the category's live set), stream_id,
--       status, created ms, create limit, create period ms, scheduled max, unstarted expiry ms
--       (SCHEDULED), streams kept, streams ttl s, then field/value pairs
local hash_key, unique_key, streamer_live_key, streams_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local scheduled_key, rate_key, live_key, outbox_key = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local idle_key = KEYS[9]
local prefix, stream_id, status, created = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local rate_limit, period_ms, scheduled_max = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local expires, kept, streams_ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local fields = slice(ARGV, 11)
local now = now_ms()
local bad = rate_check(rate_key, rate_limit, period_ms, now)
if bad then return bad end
if status == 'LIVE' then
  local current = redis.call('GET', streamer_live_key)
  if current and redis.call('HGET', key_stream(prefix, current), 'status') == 'LIVE' then
    return fail('conflict', nil, 'You already have a live stream.')
  end
  redis.call('SET', streamer_live_key, stream_id)
else
  redis.call('ZREMRANGEBYSCORE', scheduled_key, '-inf', now)
  if redis.call('ZCARD', scheduled_key) >= scheduled_max then
    return fail('conflict', nil, 'You have ' .. scheduled_max .. ' scheduled streams; start or cancel one first.')
  end
end
redis.call('HSET', hash_key, unpack(fields))
redis.call('HSET', hash_key, 'version', 1)
if status == 'SCHEDULED' then
  redis.call('PEXPIREAT', hash_key, expires)
  redis.call('ZADD', scheduled_key, expires, stream_id)
  redis.call('PEXPIREAT', scheduled_key, tonumber(redis.call('ZRANGE', scheduled_key, -1, -1, 'WITHSCORES')[2]))
end
redis.call('ZADD', streams_key, created, stream_id)
redis.call('ZREMRANGEBYRANK', streams_key, 0, -kept - 1)
redis.call('EXPIRE', streams_key, streams_ttl)
if status == 'LIVE' then
  local stream = {id = stream_id, hash = hash_key}
  set_live_score(shard_keys(prefix, live_key, outbox_key), stream, 0)
  if LIVE_IDLE_MS > 0 then redis.call('ZADD', idle_key, now + LIVE_IDLE_MS, stream_id) end
end
outbox(outbox_key, 'stream', stream_record(hash_key, unique_key))
return {'ok'}
