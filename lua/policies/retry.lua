-- Retry policy: what happens after a delivery attempt failed for at least one group.
--
-- retry(m) -> "retry", delay_ms | "dead", reason | nil (the built-in answer)
--   m = { attempts = 4,            -- attempts made so far (this one included)
--         reason = "nack",         -- last failure: "nack", "timeout", "connection lost",
--                                  -- "no consumer online", "over flow"
--         deliver_limit = 100,     -- the message's deliverLimit
--         expired_time = 1700000000, -- Unix seconds, <= 0 = never
--         now = 1699990000 }       -- Unix seconds
--   delay_ms must be a whole number 0 .. 86400000 (24 h).
--
-- This file reproduces the original KiteQ's redelivery windows: attempts 0-2 follow each
-- other at once, then 5 s (3-9), 10 s (10-19), 20 s (20-29), 40 s (30-39), 80 s (40-49),
-- 160 s (50 and more). (The original waited 0 s at exactly 3 attempts, a gap between its
-- windows; this broker waits 5 s.) A message that reached its deliverLimit or expired is dead.

local M = {}

-- { from attempts, delay in seconds }, highest first
local WINDOWS = {
  { 50, 160 }, { 40, 80 }, { 30, 40 }, { 20, 20 }, { 10, 10 }, { 3, 5 },
}

local function delay_seconds(attempts)
  for i = 1, #WINDOWS do
    if attempts >= WINDOWS[i][1] then
      return WINDOWS[i][2]
    end
  end
  return 0
end

function M.retry(m)
  if m.attempts >= m.deliver_limit then
    return "dead", string.format("deliver limit reached (%d attempts)", m.attempts)
  end
  if m.expired_time > 0 and m.expired_time <= m.now then
    return "dead", "expired"
  end
  return "retry", delay_seconds(m.attempts) * 1000
end

return M
