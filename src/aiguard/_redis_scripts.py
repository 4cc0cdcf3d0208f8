"""The Lua scripts of the Redis store (:mod:`aiguard._redis`): one per operation, each run
atomically by the server on its own clock (``TIME``), each touching the keys of one hash tag.
"""

from __future__ import annotations

_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  local held = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  redis.call('HINCRBY', KEYS[3], '_total', -held)
  redis.call('HDEL', KEYS[3], id)
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local reserved = tonumber(redis.call('HGET', KEYS[3], '_total') or '0')
local amount = tonumber(ARGV[1])
if amount > 0 then
  if spent + reserved + amount > tonumber(ARGV[2]) then return {0, spent, reserved} end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
  redis.call('HSET', KEYS[3], ARGV[3], amount)
  redis.call('HINCRBY', KEYS[3], '_total', amount)
  reserved = reserved + amount
end
return {1, spent, reserved}
"""

_SETTLE = """
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local held = redis.call('HGET', KEYS[3], ARGV[1])
if held then
  redis.call('HINCRBY', KEYS[3], '_total', -tonumber(held))
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('INCRBY', KEYS[1], cost)
  if tonumber(ARGV[3]) > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[3]) end
end
redis.call('SET', KEYS[4], 1, 'EX', 3600)
return 1
"""

# Circuit states: 0 closed, 1 open, 2 half-open. Transitions returned: 0 none, 1 open,
# 2 half-open, 3 closed.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened', 'probe')
local state = tonumber(h[1] or '0')
local failures = tonumber(h[2] or '0')
if state == 0 then return {1, 0, 0, failures} end
local left = tonumber(h[3] or '0') + tonumber(ARGV[1]) - now
if state == 1 and left <= 0 then
  redis.call('HSET', KEYS[1], 'state', 2, 'probe', now + tonumber(ARGV[2]))
  return {1, 0, 2, failures}
end
if state == 2 and tonumber(h[4] or '0') < now then
  redis.call('HSET', KEYS[1], 'probe', now + tonumber(ARGV[2]))
  return {1, 0, 0, failures}
end
if left < 0 then left = 0 end
return {0, left, 0, failures}
"""

_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 'state', 'failures')
local state = tonumber(h[1] or '0')
local failures = tonumber(h[2] or '0')
local out = 0
if ARGV[1] == '1' then
  if state == 0 and failures == 0 then return 0 end
  redis.call('HSET', KEYS[1], 'state', 0, 'failures', 0, 'probe', 0)
  if state ~= 0 then out = 3 end
else
  failures = failures + 1
  if state == 2 or (state == 0 and failures >= tonumber(ARGV[2])) then
    redis.call('HSET', KEYS[1], 'state', 1, 'failures', failures, 'opened', now, 'probe', 0)
    out = 1
  else
    redis.call('HSET', KEYS[1], 'failures', failures, 'probe', 0)
  end
end
redis.call('PEXPIRE', KEYS[1], 86400000)
return out
"""

_RELEASE = "redis.call('HSET', KEYS[1], 'probe', 0) return 1"

# Rate limits: KEYS log, tokens, learned. Returns 0 (counted) or the ms until room.
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
for _, id in ipairs(old) do
  local n = tonumber(redis.call('HGET', KEYS[2], id) or '0')
  redis.call('HINCRBY', KEYS[2], '_total', -n)
  redis.call('HDEL', KEYS[2], id)
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000) end
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wait = 0
local count = redis.call('ZCARD', KEYS[1])
if rpm > 0 and count + 1 > rpm then
  local e = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  wait = tonumber(e[2]) + 60000 - now
end
if tpm > 0 then
  local need = tonumber(redis.call('HGET', KEYS[2], '_total') or '0') + math.min(tokens, tpm) - tpm
  if need > 0 then
    local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
    local freed = 0
    for i = 1, #all, 2 do
      freed = freed + tonumber(redis.call('HGET', KEYS[2], all[i]) or '0')
      if freed >= need then
        wait = math.max(wait, tonumber(all[i + 1]) + 60000 - now)
        break
      end
    end
  end
end
local l = redis.call('HMGET', KEYS[3], 'rr', 'ru', 'tr', 'tu')
local rr, ru = tonumber(l[1] or '0'), tonumber(l[2] or '0')
local tr, tu = tonumber(l[3] or '0'), tonumber(l[4] or '0')
if ru > now and rr < 1 then wait = math.max(wait, ru - now) end
if tu > now and tr < tokens then wait = math.max(wait, tu - now) end
if wait > 0 then return math.max(wait, 1) end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('HSET', KEYS[2], ARGV[4], tokens)
redis.call('HINCRBY', KEYS[2], '_total', tokens)
if ru > now then redis.call('HINCRBY', KEYS[3], 'rr', -1) end
if tu > now then redis.call('HINCRBY', KEYS[3], 'tr', -tokens) end
redis.call('PEXPIRE', KEYS[1], 61000)
redis.call('PEXPIRE', KEYS[2], 61000)
return 0
"""

_CORRECT = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
local delta = tonumber(ARGV[2]) - tonumber(old)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], '_total', delta)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(redis.call('HGET', KEYS[3], 'tu') or '0') > now then
  redis.call('HINCRBY', KEYS[3], 'tr', -delta)
end
return 1
"""

# ARGV: requests remaining, ms to reset, tokens remaining, ms to reset (-1: not said).
_LEARN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[1]) >= 0 then
  redis.call('HSET', KEYS[1], 'rr', ARGV[1], 'ru', now + tonumber(ARGV[2]))
end
if tonumber(ARGV[3]) >= 0 then
  redis.call('HSET', KEYS[1], 'tr', ARGV[3], 'tu', now + tonumber(ARGV[4]))
end
redis.call('PEXPIRE', KEYS[1], 61000)
return 1
"""

# Forget a request counted ahead of time that was never sent (KEYS log, tokens; ARGV id).
_FORGET = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if not old then return 0 end
redis.call('HINCRBY', KEYS[2], '_total', -tonumber(old))
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

SCRIPTS = {
    "reserve": _RESERVE,
    "settle": _SETTLE,
    "acquire": _ACQUIRE,
    "record": _RECORD,
    "release": _RELEASE,
    "rate": _RATE,
    "correct": _CORRECT,
    "learn": _LEARN,
    "forget": _FORGET,
}
