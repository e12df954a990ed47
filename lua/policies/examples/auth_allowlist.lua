-- Authentication example: not loaded from here. To use it, copy it into the policies folder
-- as auth.lua and send the broker a SIGHUP.
--
-- on_connect(c) -> "accept" | "reject", reason | nil
--   called once per ConnMeta (handshake): c = { group, secret_ok, peer_ip, peer_port,
--   warmup, connections } (connections: the group's connections open before this one).
--   "reject", reason: the client's ConnAuthAck is false with reason as its feedback and the
--   connection closes. The hook can only tighten: a wrong secret (secret_ok == false) is
--   refused whatever it answers. nil or "accept": the built-in answer (accept iff secret_ok).
--
-- This example lets each listed group connect from its own addresses only, caps the
-- connections of one group, and has a maintenance switch.

local M = {}

-- groups not listed connect from anywhere
local ALLOW = {
  ["s-trade-a"] = { ["127.0.0.1"] = true, ["10.0.0.7"] = true },
}
local MAX_CONNECTIONS = { ["s-trade-b"] = 4 }
local MAINTENANCE = false -- true: only producers (p-*) may connect

function M.on_connect(c)
  if MAINTENANCE and c.group:sub(1, 2) ~= "p-" then
    return "reject", "maintenance: consumers connect again later"
  end
  local allow = ALLOW[c.group]
  if allow and not allow[c.peer_ip] then
    kq.log("warn", "group " .. c.group .. " refused from " .. c.peer_ip)
    return "reject", "group " .. c.group .. " may not connect from " .. c.peer_ip
  end
  local max = MAX_CONNECTIONS[c.group]
  if max and c.connections >= max then
    return "reject", "group " .. c.group .. " has its " .. max .. " connections already"
  end
  return "accept"
end

return M
