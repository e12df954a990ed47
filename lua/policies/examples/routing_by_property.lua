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

function M.route_message(m, binds)
  local region = m.properties.region
  if region == nil then
    return nil
  end
  local want = "s-" .. region
  for _, b in ipairs(binds) do
    if b.group == want then
      return { want }
    end
  end
  return nil
end

return M
