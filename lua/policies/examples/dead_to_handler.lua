-- Dead-letter example: not loaded from here. To use it, add its on_dead to the policies
-- folder's retry.lua (keep your retry) and send the broker a SIGHUP.
--
-- on_dead(m, reason) -> "dlq" | "drop" | { groups = { ... } } | nil
--   called when a message is about to be dead-lettered (its retry said dead, its deliver
--   limit or expiry ran out, or a two-phase message was never resolved). m is what
--   on_publish sees, plus m.attempts; reason the dead verdict's reason.
--   "dlq" (and nil): the dead-letter store, as without the hook. "drop": forgotten, counted
--   (the hook's rejects) and logged. { groups = {...} }: delivered to these groups instead,
--   each must have a binding on the topic (any messageType); they get a fresh deliver
--   limit of attempts and the expiry no longer applies. Once: if it fails there too, it is
--   a dead letter for real. A two-phase message never committed cannot be handed over.
--
-- This example hands the trade topic's dead letters to s-dead-handler (bind it to trade
-- with a messageType nobody publishes, e.g. a direct binding to "dead", so it gets only
-- what is handed to it) and drops debug messages.

local M = {}

function M.on_dead(m, reason)
  if m.message_type:sub(1, 6) == "debug-" then
    return "drop"
  end
  if m.topic == "trade" then
    return { groups = { "s-dead-handler" } }
  end
  return "dlq"
end

return M
