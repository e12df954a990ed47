-- Routing policy: which consumer groups receive a message.
--
-- route(topic, message_type, binds) -> list of group names, or nil for the built-in answer.
--   binds: every binding of the topic, in a stable order; each is
--     { group = "s-trade-a", topic = "trade", message_type = "pay-\\d+",
--       bind_type = "direct" | "regx" | "fanout", watermark = 1000, persistent = true }
--   Return each group at most once; the broker ignores names that have no binding on the
--   topic. Answers are cached per (topic, message_type) until the bindings or the policies
--   change, so the result must depend on the arguments only.
--
-- This file reproduces the original KiteQ: direct = exact messageType, regx = RE2-style
-- pattern searched anywhere in the messageType (kq.regex_match, PCRE2 in the broker; a
-- pattern that does not compile matches nothing), fanout = every messageType of the topic.
-- See docs/POLICIES.md before editing; test with `busted --lua=luajit tests/lua`.

local M = {}

local function matches(b, message_type)
  if b.bind_type == "fanout" then
    return true
  elseif b.bind_type == "regx" then
    -- regex_match returns false plus a reason for a bad pattern: keep the boolean only
    return (kq.regex_match(b.message_type, message_type))
  end
  return b.message_type == message_type
end

function M.route(topic, message_type, binds)
  local groups, seen = {}, {}
  for i = 1, #binds do
    local b = binds[i]
    if not seen[b.group] and matches(b, message_type) then
      seen[b.group] = true
      groups[#groups + 1] = b.group
    end
  end
  return groups
end

return M
