-- Routing example: not loaded from here. To use it, copy it into the policies folder as
-- routing.lua (or add its route_message to yours) and send the broker a SIGHUP.
--
-- route_message(m, binds) -> { groups } | nil
--   called for every delivery attempt of every message (not memoised: costs one Lua call
--   per attempt). m is what on_publish sees (properties included; peer is empty), binds the
--   topic's bindings as route gets them. nil: the built-in routing (or route, when this
--   file defines it). Groups without a binding on the topic are dropped and counted.
--
-- This example sends a message whose property region is "eu" to the group s-eu (and "us" to
-- s-us, ...) when that group is bound on the topic; anything else is routed as usual.

local M = {}

-- region -> the answer naming its group ("eu" -> { "s-eu" }), made once per region instead
-- of once per message: the broker only reads an answer, so one table can answer every
-- message of the region (docs/POLICIES.md, "Writing cheap hooks"). Bounded: regions come
-- from publishers, and module locals live until the next reload.
local ANSWER_OF_REGION, regions_known = {}, 0

function M.route_message(m, binds)
  local region = m.properties.region
  if region == nil then
    return nil
  end
  local answer = ANSWER_OF_REGION[region]
  if answer == nil then
    answer = { "s-" .. region }
    if regions_known < 1000 then
      ANSWER_OF_REGION[region], regions_known = answer, regions_known + 1
    end
  end
  local want = answer[1]
  for i = 1, #binds do -- a counted loop: cheaper than ipairs when interpreted
    if binds[i].group == want then
      return answer
    end
  end
  return nil
end

return M
