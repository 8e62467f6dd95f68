"""The Lua scripts run on the redis server: the GCRA limiter step, the shared records
(adaptive rate, breaker) and the ``max_concurrency`` leases.

Each reads the clock with ``TIME`` (the server's, so hosts with unsynchronised clocks agree)
and passes numbers as strings: redis truncates Lua numbers to integers.
"""

from __future__ import annotations

__all__ = ["GCRA_LUA", "RECORD_LUA", "SLOTS_LUA"]

#: One atomic GCRA step (``reserve``, ``confirm`` or ``hold``) on a budget's hash and its ring
#: of recent starts. ARGV = mode, interval, burst, rate, window cap, wait.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cap = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'tat', 'last')
local tat = tonumber(state[1]) or 0
local last = tonumber(state[2]) or (now - 1e6)
local oldest = -1e300
if burst > 1 and redis.call('LLEN', KEYS[2]) >= cap then
  oldest = tonumber(redis.call('LINDEX', KEYS[2], -cap))
end
local delay = 0
if ARGV[1] == 'reserve' then
  if tat < now then tat = now end
  local start = math.max(now, tat - (burst - 1) * interval, oldest + 1)
  delay = start - now
  tat = tat + interval
elseif ARGV[1] == 'hold' then
  tat = math.max(tat, now + tonumber(ARGV[6]) + (burst - 1) * interval)
elseif burst == 1 and now < last + interval then
  delay = last + interval - now
elseif burst > 1 and now < oldest + 1 then
  delay = oldest + 1 - now
else
  if now > last then last = now end
  if burst > 1 then
    redis.call('RPUSH', KEYS[2], string.format('%.6f', now))
    redis.call('LTRIM', KEYS[2], -cap, -1)
    redis.call('PEXPIRE', KEYS[2], 60000)
  end
end
redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', tat), 'last', string.format('%.6f', last),
           'rate', ARGV[4], 'burst', ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil((tat - now + 60) * 1000))
return string.format('%.9f %.6f', delay, now)
"""

#: The shared records of ``opero._limit`` (adaptive rate) and ``opero._breaker`` as one Lua
#: script: ARGV = op name, initial values, op arguments. Values are kept as one string of
#: numbers (``%.17g``), so nothing is rounded; the clock is the server's (``TIME``).
RECORD_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local raw = redis.call('GET', KEYS[1]) or ARGV[2]
local v = {}
for x in string.gmatch(raw, '%S+') do v[#v + 1] = tonumber(x) end
local op = ARGV[1]
local a = {}
for i = 3, #ARGV do a[#a + 1] = tonumber(ARGV[i]) end
local out = {-1}
if op == 'aimd_read' then
  out = {v[1], v[2]}
elseif op == 'aimd_throttled' then
  if a[1] == v[2] then
    local rate, peak = v[1], v[5] or 0
    local cut = a[2]
    if peak > 0 and math.abs(rate - peak) <= a[5] * peak then cut = a[4] end
    v[5] = rate
    v[1] = math.max(a[3], rate * cut); v[3] = v[1]; v[2] = v[2] + 1; v[4] = 0
    out = {v[1]}
  end
elseif op == 'aimd_succeeded' then
  local rate, peak = v[1], v[5] or 0
  if v[4] ~= 0 then
    rate = rate + 1
  else
    local gain = a[1] * v[3] / rate
    if peak > 0 and math.abs(rate - peak) <= a[3] * peak then gain = gain * a[2] end
    rate = rate + gain
  end
  if a[4] > 0 and rate > a[4] then rate = a[4] end
  v[1] = rate; v[5] = peak
  out = {rate}
elseif op == 'pace_take' then
  if a[3] > 0 and (v[2] >= a[3] or v[2] + a[2] > a[3]) then
    out = {-1}
  else
    v[2] = v[2] + a[2]
    local start = math.max(v[1], now)
    if a[1] > 0 then v[1] = start + a[1] end
    out = {start - now}
  end
elseif op == 'pace_adjust' then
  v[1] = v[1] + a[1]; v[2] = v[2] + a[2]
  out = {v[2]}
elseif op == 'pace_hold' then
  v[1] = math.max(v[1], now + a[1])
  out = {0}
elseif op == 'pace_read' then
  out = {v[2]}
elseif op == 'aimd_publish' then
  v[1] = a[1]; v[3] = a[1]; v[4] = 0
  out = {a[1]}
elseif op == 'breaker_state' then
  out = {v[1]}
elseif op == 'breaker_before' then
  if v[1] == 0 then
    out = {0, 0, -1}
  elseif v[1] == 1 then
    if now < v[2] and a[2] == 0 then
      out = {2, v[2] - now, -1}
    else
      v[1] = 2; v[3] = now + a[1]
      out = {1, 0, 2}
    end
  elseif now >= v[3] or a[2] ~= 0 then
    v[3] = now + a[1]
    out = {1, 0, -1}
  else
    out = {3, v[3] - now, -1}
  end
elseif op == 'breaker_success' then
  if v[1] ~= 0 then
    v[1] = 0; v[4] = 0
    for i = 5, #v do v[i] = -1e300 end
    out = {0}
  end
elseif op == 'breaker_failure' then
  local n = a[1]
  if v[1] == 2 then
    if a[4] ~= 0 then v[1] = 1; v[2] = now + a[3]; out = {1} end
  elseif v[1] == 0 then
    local head = v[4]
    v[5 + head % n] = now
    v[4] = (head + 1) % n
    if v[5 + (head + 1) % n] >= now - a[2] then v[1] = 1; v[2] = now + a[3]; out = {1} end
  end
end
local parts = {}
for i = 1, #v do parts[i] = string.format('%.17g', v[i]) end
redis.call('SET', KEYS[1], table.concat(parts, ' '), 'PX', 86400000)
local res = {}
for i = 1, #out do res[i] = string.format('%.17g', out[i]) end
return table.concat(res, ' ')
"""

#: ``max_concurrency`` slots as a sorted set of leases (member -> expiry on the server's
#: clock). ARGV = op, member, limit, lease seconds.
SLOTS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op = ARGV[1]
if op == 'release' then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now))
local n = redis.call('ZCARD', KEYS[1])
if op == 'count' then return n end
if n < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], string.format('%.6f', now + tonumber(ARGV[4])), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(ARGV[4]) * 1000) + 1000)
  return 1
end
return 0
"""
