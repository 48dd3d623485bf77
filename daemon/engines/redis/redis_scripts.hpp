#pragma once

// The two batch scripts the purge sends (EVALSHA): each re-checks every key atomically before it
// deletes or clamps it. Private to the redis engine.

#include <string_view>

namespace retentiond::redis_detail {

// One letter per key: D deleted, H held, S skipped (no longer due, changed, or gone).
// ARGV: mode (idle | field), min idle seconds or the clock field, hold field ('' = none), hold
// value, the cutoff in whole epoch seconds (field mode), then in field mode one flag per key and
// the expected values of the '=' keys, in order. Flags: 'n' the clock is still 1 to 12 decimal
// digits (epoch seconds), a plausible clock (from 100000000: below is a sentinel or not a clock,
// see read_clock) and at or before the cutoff (the
// due condition itself, evaluated now); '=' the field still holds exactly the text judged due
// (clocks Lua cannot parse: ISO 8601, fractions, milliseconds, and sentinels such as "0" under
// clock_null: due); '-' still no field. In field mode the clock and
// the hold are one HMGET (one lookup of the key). UNLINK runs once per 1000 keys (per-call overhead
// dominates in Lua).
inline constexpr std::string_view k_delete_script = R"lua(
local mode, arg, hold_field, hold_value = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cutoff, flags, j = tonumber(ARGV[5]), ARGV[6], 6
local min_idle = tonumber(arg)
local out, del = {}, {}
for i, key in ipairs(KEYS) do
  local due, held = false, false
  if mode == 'idle' then
    local idle = redis.call('OBJECT', 'IDLETIME', key)
    due = idle and idle >= min_idle
    if due and hold_field ~= '' then
      held = redis.pcall('HGET', key, hold_field) == hold_value
    end
  else
    local v
    if hold_field ~= '' then
      local r = redis.pcall('HMGET', key, arg, hold_field)
      if r.err then v = r else v, held = r[1], r[2] == hold_value end
    else
      v = redis.pcall('HGET', key, arg)
    end
    local f = string.byte(flags, i)
    if f == 110 then -- 'n'
      due = type(v) == 'string' and #v <= 12 and string.find(v, '^%d+$') ~= nil and
        tonumber(v) >= 100000000 and tonumber(v) <= cutoff
    elseif f == 61 then -- '='
      j = j + 1
      due = v == ARGV[j]
    elseif type(v) == 'table' then
      due = true -- not a hash: no clock
    else
      due = not v and redis.call('EXISTS', key) == 1
    end
  end
  local s = 'S'
  if due then
    if held then
      s = 'H'
    else
      del[#del + 1] = key
      s = 'D'
    end
  end
  out[i] = s
end
for i = 1, #del, 1000 do
  redis.call('UNLINK', unpack(del, i, math.min(i + 999, #del)))
end
return table.concat(out)
)lua";

// One letter per key: E expired, H held, S skipped (TTL already short enough, or key gone).
inline constexpr std::string_view k_expire_script = R"lua(
local max, hold_field, hold_value = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}
for i, key in ipairs(KEYS) do
  local s = 'S'
  if hold_field ~= '' and redis.pcall('HGET', key, hold_field) == hold_value then
    s = 'H'
  else
    local ttl = redis.call('TTL', key)
    if ttl == -1 or ttl > max then
      redis.call('EXPIRE', key, max)
      s = 'E'
    end
  end
  out[i] = s
end
return table.concat(out)
)lua";

} // namespace retentiond::redis_detail
