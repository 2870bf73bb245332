-- portcullis: decide one request's buckets atomically, on the server's clock.
--
-- The server-side twin of crates/portcullis-core/src/limit/{gcra,sliding_window,fixed_window}.rs:
-- the same algorithms, in microseconds (Lua numbers are doubles, exact below 2^53;
-- the sliding window falls back to milliseconds for products that would not be).
--
-- KEYS[i]  one bucket per enforcing policy, `pc:{<hex>}`
-- ARGV[1]  "take" (decide, and commit only if every bucket admits) or "refund"
--          (give `cost` back; used by cluster calls that span several slots)
-- ARGV[1 + 5(i-1) + 1..5]  algorithm (1 gcra, 2 sliding_window, 3 fixed_window),
--          limit, burst, window (µs), cost
-- Returns {now_us, then per key: allowed, remaining, reset_after_us, retry_after_us
--          (-1 when allowed), window_after_us, never_fits}

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local mode = ARGV[1]

local function fmt(x) return string.format('%d', x) end
local function ceil_div(a, b) local q = math.floor(a / b); if q * b < a then q = q + 1 end; return q end
local function ttl_ms(us) return math.max(1, ceil_div(us, 1000)) + 1000 end

-- Each returns: allowed, remaining, reset_after, retry_after, window_after, never, new_value, ttl
-- and the same request's peek (cost 0) remaining/reset/window_after for denied batches.
local function gcra(raw, limit, burst, w, cost)
  local cap = limit + burst
  local T = ceil_div(w, limit)
  local tat = now
  if raw then tat = math.max(tonumber(raw), now) end
  local horizon = now + cap * T
  local function view(new_tat)
    local avail = math.floor((horizon - new_tat) / T)
    local wa = 0
    if avail < cap then wa = (avail + 1) * T - (horizon - new_tat) end
    return avail, new_tat - now, wa
  end
  if mode == 'refund' then
    return fmt(math.max(now, tat - cost * T)), ttl_ms(math.max(0, tat - cost * T - now))
  end
  local pr, prst, pwa = view(tat)
  local new_tat = tat + cost * T
  if new_tat <= horizon then
    local r, rst, wa = view(new_tat)
    return {1, r, rst, -1, wa, 0}, fmt(new_tat), ttl_ms(new_tat - now), {pr, prst, pwa}
  end
  local never = cost > cap
  local wait = new_tat - horizon
  if never then wait = tat - now + cap * T end
  local rem = 0
  if horizon > tat then rem = math.floor((horizon - tat) / T) end
  return {0, rem, tat - now, wait, wait, never and 1 or 0}, nil, nil, {pr, prst, pwa}
end

local function fixed(raw, limit, burst, w, cost)
  local cap = limit + burst
  local start = now - (now % w)
  local until_end = start + w - now
  local count = 0
  if raw then
    local s, c = string.match(raw, '^(%d+):(%d+)$')
    if s and tonumber(s) == start then count = tonumber(c) end
  end
  if mode == 'refund' then
    return fmt(start) .. ':' .. fmt(math.max(0, count - cost)), ttl_ms(until_end)
  end
  local peek_reset = 0
  if count > 0 then peek_reset = until_end end
  local peek = {cap - math.min(cap, count), peek_reset, until_end}
  local after = count + cost
  if after <= cap then
    local rst = 0
    if after > 0 then rst = until_end end
    return {1, cap - after, rst, -1, until_end, 0}, fmt(start) .. ':' .. fmt(after), ttl_ms(until_end), peek
  end
  return {0, math.max(0, cap - count), until_end, until_end, until_end, (cost > cap) and 1 or 0}, nil, nil, peek
end

local function sliding(raw, limit, burst, w, cost)
  local cap = limit + burst
  local start = now - (now % w)
  local left = w - (now - start)
  local cur, prev = 0, 0
  if raw then
    local s, c, p = string.match(raw, '^(%d+):(%d+):(%d+)$')
    if s then
      s = tonumber(s)
      if s == start then cur = tonumber(c); prev = tonumber(p)
      elseif s + w == start then prev = tonumber(c) end
    end
  end
  if mode == 'refund' then
    return fmt(start) .. ':' .. fmt(math.max(0, cur - cost)) .. ':' .. fmt(prev), ttl_ms(left + w)
  end
  -- Products must stay exact: above 2^52 work in milliseconds, rounding the previous
  -- window's weight up (never admitting more than the exact rule would).
  local unit = 1
  if cap * w > 4.5e15 then unit = 1000 end
  local wu = w / unit
  local lu = ceil_div(left, unit)
  local budget = cap * wu
  local function reset_of(c, p)
    if c > 0 then return left + w elseif p > 0 then return left else return 0 end
  end
  local peek = {math.floor(math.max(0, budget - prev * lu - cur * wu) / wu), reset_of(cur, prev), left}
  local used = prev * lu + (cur + cost) * wu
  if used <= budget then
    local c2 = cur + cost
    return {1, math.floor((budget - used) / wu), reset_of(c2, prev), -1, left, 0},
      fmt(start) .. ':' .. fmt(c2) .. ':' .. fmt(prev), ttl_ms(reset_of(c2, prev)), peek
  end
  local never = cost > cap
  local wait
  if never then
    wait = left + w
  else
    wait = nil
    if cur + cost <= cap and prev > 0 then
      local spare = (cap - cur - cost) * wu
      local need = prev * lu - math.min(spare, prev * lu)
      local d = ceil_div(need, prev) * unit
      if d < left then wait = d end
    end
    if not wait then
      local e = 0
      if cur > 0 then e = ceil_div(math.max(0, cur * wu - (cap - cost) * wu), cur) * unit end
      wait = left + e
    end
  end
  return {0, peek[1], reset_of(cur, prev), wait, wait, never and 1 or 0}, nil, nil, peek
end

local algorithms = {gcra, sliding, fixed}

if mode == 'refund' then
  for i = 1, #KEYS do
    local b = 1 + (i - 1) * 5
    local raw = redis.call('GET', KEYS[i])
    if raw then
      local value, ttl = algorithms[tonumber(ARGV[b + 1])](raw, tonumber(ARGV[b + 2]),
        tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]))
      redis.call('SET', KEYS[i], value, 'PX', ttl)
    end
  end
  return {now}
end

local out = {now}
local writes = {}
local peeks = {}
local all = true
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 5
  local raw = redis.call('GET', KEYS[i])
  if raw == false then raw = nil end
  local d, value, ttl, peek = algorithms[tonumber(ARGV[b + 1])](raw, tonumber(ARGV[b + 2]),
    tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]))
  if d[1] == 0 then all = false end
  if value then writes[#writes + 1] = {KEYS[i], value, ttl} end
  peeks[i] = peek
  for j = 1, 6 do out[#out + 1] = d[j] end
end
if all then
  for _, wr in ipairs(writes) do redis.call('SET', wr[1], wr[2], 'PX', wr[3]) end
else
  -- Nothing is taken: buckets that would have admitted report their state as it is.
  for i = 1, #KEYS do
    local o = 1 + (i - 1) * 6
    if out[o + 1] == 1 then
      out[o + 2] = peeks[i][1]
      out[o + 3] = peeks[i][2]
      out[o + 5] = peeks[i][3]
    end
  end
end
return out
