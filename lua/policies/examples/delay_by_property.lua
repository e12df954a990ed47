-- Publish policy example: delay by property. Not loaded from here: copy it into the policies
-- folder as publish.lua and send the broker a SIGHUP.
--
-- Producers mark messages that need not go out at once with a property `priority`: "low"
-- ones are delivered a minute after they were published, "bulk" ones ten minutes after.
-- "high" or no priority: at once. Any other value is refused, so a typo is seen by the
-- producer instead of silently going out at once. A producer may also ask for a delay
-- itself with the property x-kiteq-delay-ms (milliseconds); a delay_ms answered here
-- replaces it.
--
-- on_publish(m) -> nil | "reject", reason | { changes } (docs/POLICIES.md). Used here:
--   delay_ms = a whole number 0 .. 604800000 (7 days): deliver no earlier than now + delay_ms.
--              The message must not expire before then, else the answer is invalid (the
--              message is stored unchanged and the hook's error is counted).
-- The due time is stored with the message (property x-kiteq-deliver-at, Unix ms, which
-- consumers see), so a restart keeps it.

local M = {}

local DELAY_MS = { low = 60 * 1000, bulk = 10 * 60 * 1000 }

function M.on_publish(m)
  local priority = m.properties.priority
  if priority == nil or priority == "high" then
    return nil
  end
  local delay = DELAY_MS[priority]
  if delay == nil then
    return "reject", "unknown priority '" .. priority .. "' (high, low or bulk)"
  end
  return { delay_ms = delay }
end

return M
