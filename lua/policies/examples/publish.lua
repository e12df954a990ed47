-- Publish policy example: not loaded from here. To use it, copy it into the policies folder
-- as publish.lua and send the broker a SIGHUP. Without a publish.lua the broker stores every
-- valid message as published, and calls no Lua for it.
--
-- on_publish(m) -> nil | "reject", reason | { changes }
--   called once per published message, before it is stored:
--   m = { message_id = "…32 hex…", topic = "trade", message_type = "pay-succ",
--         group = "p-trade",            -- the publisher's group
--         properties = { k = "v" },     -- Header.properties
--         body_size = 42,               -- bytes (the body itself is not passed)
--         fly = false, commit = true,
--         expired_time = 1700000000,    -- Unix s, already capped at now + 7 days
--         deliver_limit = 100,
--         peer = "10.0.0.7:52114" }
--   nil: store it as is. "reject", reason: the producer's MessageStoreAck is false with
--   reason as its feedback; nothing is stored. A table of changes (each optional):
--   properties = { k = "v" (set), k = false (delete) }, expired_time = Unix s (now+1 ..
--   now + 7 days), deliver_limit = 1..100. The broker checks every change: an invalid answer
--   stores the message unchanged and counts an error for the hook. See docs/POLICIES.md.
--
-- This example refuses oversize bodies on one topic and gives every message a region.

local M = {}

-- the largest body (bytes) each topic accepts; topics not listed take any size
local MAX_BODY = { ["user-profile"] = 64 * 1024 }

-- The answer every message without a region gets, made once at load with kq.changes: the
-- broker checks it there (a mistake fails the load, not every message) and answers it per
-- message without reading a table back from Lua. A new table per message would be garbage
-- the collector frees on the event loop, and a plain table is read and checked again at
-- every call (docs/POLICIES.md "Writing cheap hooks").
local ADD_DEFAULT_REGION = kq.changes({ properties = { region = "default" } })

function M.on_publish(m)
  local max = MAX_BODY[m.topic]
  if max and m.body_size > max then
    return "reject", "body of " .. m.body_size .. " bytes is over the " .. max ..
                     " bytes topic " .. m.topic .. " accepts"
  end
  if m.properties.region == nil then
    return ADD_DEFAULT_REGION
  end
  return nil
end

return M
