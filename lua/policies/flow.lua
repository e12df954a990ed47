-- Flow policy: token buckets and in-flight windows. Called on (re)load and about once a
-- second per active (group, topic) with live figures, never per message.
--
-- intake(permits_per_second) -> { rate =, burst =, window = } | nil
--   the broker-wide publish limit; permits_per_second is recievePermitsPerSecond.
-- group(group, topic, f) -> { rate =, burst =, window = } | nil
--   f = { inflight =, backlog =, recent_failures =, watermark = } for one (group, topic);
--   watermark is the group's first binding's (<= 0 when unset).
-- rate: tokens per second (0 = unlimited), burst: bucket size (>= 1 when rate > 0),
-- window: most deliveries in flight at once (0 = no limit). A missing field keeps the
-- built-in value; nil keeps the whole built-in answer.
--
-- This file reproduces the original KiteQ: intake rate = recievePermitsPerSecond with burst
-- rate/2; per group rate = watermark (<= 0 -> 6000) with burst rate/2 (at least
-- 1: the original's burst 0 at watermark 1 let nothing through). Unlike the original, an
-- explicit watermark above 6000 is honoured (the original capped every group at 6000/s). The original had no
-- per-group window (only the broker-wide maxDeliverWorkers); 1000 in flight per group keeps
-- one slow group from holding every delivery slot.

local M = {}

local DEFAULT_WATERMARK = 6000
local WINDOW = 1000

local function half(rate)
  return math.max(1, math.floor(rate / 2))
end

function M.intake(permits)
  if permits <= 0 then
    return { rate = 0, burst = 0, window = 0 } -- unlimited
  end
  return { rate = permits, burst = half(permits), window = 0 }
end

function M.group(group, topic, f)
  local w = f.watermark
  if w <= 0 then
    w = DEFAULT_WATERMARK
  end
  return { rate = w, burst = half(w), window = WINDOW }
end

return M
