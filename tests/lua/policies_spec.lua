-- The shipped policies (lua/policies/*.lua and lua/policies/examples/) run by the broker's own
-- code: the kiteq.policy module (src/policy/module) loads a folder in the broker's sandbox,
-- with its budgets and self-tests, and answers each call as the broker applies it (after C's
-- validation and fallbacks). No Lua re-implementation of the sandbox here.
-- Run from the repository root after a build: busted --lua=luajit tests/lua
-- This spec always tests the shipped folder (the examples: examples_spec.lua); for your own
-- policies copy tests/lua/template/my_policies_spec.lua (docs/POLICIES.md, "Testing a policy").

local policy = require("kiteq.policy")
local h = require("tests.lua.helpers")

local SHIPPED = h.SHIPPED
local load_files, bind, groups = h.load_files, h.bind, h.groups

describe("the module", function()
  it("names the hooks and the budgets of a call", function()
    assert.are.same({ "route", "retry", "flow.intake", "flow.group", "publish",
                      "route_message", "connect", "dead" }, policy.hooks)
    assert.are.equal(1000000, policy.budget.instructions)
    assert.are.equal(20, policy.budget.ms)
  end)

  it("reports a folder that does not load, as the broker would", function()
    local p, err = load_files({ ["retry.lua"] = "return { retry = 1 }\n" })
    assert.is_nil(p)
    assert.matches("retry.lua: retry must be a function %(got number%)", err)
    p, err = policy.load("/nonexistent/policies")
    assert.is_nil(p)
    assert.matches("no such folder", err)
  end)

  it("refuses unknown hooks and bad arguments", function()
    local p = assert(policy.load(SHIPPED))
    assert.has_error(function() p:call("nope", {}) end, "unknown hook 'nope' (hooks: route " ..
                     "retry flow.intake flow.group publish route_message connect dead)")
    assert.has_error(function() p:call("retry", { attempts = "3" }) end,
                     "attempts: must be a whole number in -2147483648..2147483647")
    -- out of the field's range: refused before any conversion (1e300 used to be converted)
    assert.has_error(function() p:call("retry", { attempts = 1e300 }) end,
                     "attempts: must be a whole number in -2147483648..2147483647")
    assert.has_error(function() p:call("publish", { body_size = -1 }) end,
                     "body_size: must be a whole number in 0..9007199254740992")
    assert.has_error(function() p:call("connect", { secret_ok = "yes" }) end,
                     "secret_ok: must be true or false")
    assert.has_error(function() p:call("dead", { properties = { n = 1 } }) end,
                     "properties: at most 64, each a string")
  end)

  it("refuses a misspelt argument instead of using the self-test's value", function()
    local p = assert(policy.load(SHIPPED))
    assert.has_error(function() p:call("connect", { peerip = "10.0.0.1" }) end,
                     "connect: unknown argument 'peerip' (arguments: connections group peer_ip " ..
                     "peer_port secret_ok warmup)")
    assert.has_error(function()
      p:call("route_message", { bindings = { { group = "g", messageType = "x" } } })
    end, "bindings[1]: unknown argument 'messageType' (arguments: bind_type group message_type " ..
         "persistent watermark)")
  end)
end)

describe("the sandbox and budgets, through the module", function()
  local p = assert(load_files({ ["routing.lua"] = [[
local BACKTRACK = string.rep("a*", 8) .. "c"
return { route = function(topic, t, binds)
  if t == "loop" then while true do end end
  if t == "escape" then return { tostring(('').dump) .. tostring(getmetatable('')) } end
  if t:find(BACKTRACK) then return {} end
  return nil
end }
]] }))
  local binds = { bind("g-all", "*", "fanout") }

  it("stops an endless loop within the call budget and answers with the built-in route", function()
    local answer, problem = p:call("route", { topic = "t", message_type = "loop", bindings = binds })
    assert.are.same({ "g-all" }, groups(answer))
    assert.matches("stopped: over the %a+ budget", problem)
  end)

  it("refuses a backtracking pattern before it runs", function()
    local answer, problem = p:call("route", { topic = "t", message_type = string.rep("a", 30) .. "b",
                                              bindings = binds })
    assert.are.same({ "g-all" }, groups(answer))
    assert.matches("string.find: pattern on a 31%-byte subject: worst case", problem)
  end)

  it("keeps the string metatable closed", function()
    local answer, problem = p:call("route", { topic = "t", message_type = "escape", bindings = binds })
    assert.are.same({}, groups(answer)) -- "nilfalse" is no bound group: dropped
    assert.matches('dropped 1 group%(s%) without a binding on the topic, e.g. "nilfalse"', problem)
  end)
end)

describe("a per-message hook in an endless loop", function()
  -- each loops only when asked to (an unconditional loop fails the load's self-test)
  local p = assert(load_files({
    ["routing.lua"] = [[
return { route_message = function(m, binds)
  if m.properties.loop then while true do end end
  return nil
end }
]],
    ["publish.lua"] = [[
return { on_publish = function(m)
  if m.properties.loop then local t = {} while true do t[#t % 8 + 1] = m.topic end end
  return nil
end }
]],
    ["retry.lua"] = [[
return { on_dead = function(m, reason)
  if m.properties.loop then repeat until false end
  return "drop"
end }
]],
    ["auth.lua"] = [[
return { on_connect = function(c)
  if c.group == "loop" then while c do end end
  return "accept"
end }
]],
  }))
  local loop = { loop = "yes" }
  local binds = { bind("g-all", "*", "fanout") }

  it("is stopped by the budget and the message routed as without it", function()
    local answer, problem = p:call("route_message", { topic = "t", properties = loop,
                                                      bindings = binds })
    assert.are.same({ "g-all" }, groups(answer))
    assert.matches("hook=route_message.*stopped: over the %a+ budget", problem)
  end)

  it("is stopped by the budget and the message accepted as is", function()
    local answer, problem = p:call("publish", { properties = loop })
    assert.are.same({ action = "accept" }, answer)
    assert.matches("hook=publish.*stopped: over the %a+ budget", problem)
  end)

  it("is stopped by the budget and the message dead-lettered", function()
    local answer, problem = p:call("dead", { properties = loop })
    assert.are.same({ action = "dlq" }, answer)
    assert.matches("hook=dead.*stopped: over the %a+ budget", problem)
    assert.are.same({ action = "drop" }, h.call(p, "dead", {}))
  end)

  it("is stopped by the budget and the connection let in on its secret only", function()
    local answer, problem = p:call("connect", { group = "loop" })
    assert.are.same({ action = "accept" }, answer)
    assert.matches("hook=connect.*stopped: over the %a+ budget", problem)
    answer = p:call("connect", { group = "loop", secret_ok = false })
    assert.are.same({ action = "reject", reason = "unknown groupId or wrong secretKey" }, answer)
  end)

  it("counts each overrun as the hook's error", function()
    local stats = p:stats()
    for _, hook in ipairs({ "route_message", "publish", "dead", "connect" }) do
      assert.is_true(stats[hook].errors >= 1, hook)
    end
  end)
end)

describe("on_publish's groups, checked against the bindings given", function()
  local p = assert(load_files({ ["publish.lua"] = [[
return { on_publish = function(m)
  return m.properties.to and { groups = { m.properties.to } } or nil
end }
]] }))
  local binds = { bind("s-a", "x"), bind("s-b", "y") }

  it("keeps a bound group", function()
    local answer = h.call(p, "publish", { topic = "t", properties = { to = "s-b" },
                                          bindings = binds, expired_time = 100, now = 50 })
    assert.are.same({ action = "change", groups = { "s-b" }, properties = { to = "s-b" },
                      expired_time = 100, deliver_limit = 100 }, answer)
  end)

  it("accepts the message unchanged when a group is not bound", function()
    local answer, problem = p:call("publish", { topic = "t", properties = { to = "s-c" },
                                                bindings = binds })
    assert.are.same({ action = "accept" }, answer)
    assert.matches('groups%[1%] "s%-c" has no binding on the topic', problem)
  end)
end)

describe("routing.lua", function()
  local p = assert(policy.load(SHIPPED))
  local binds = {
    bind("g-direct", "pay-200", "direct"),
    bind("g-regx", "pay-\\d+", "regx"),
    bind("g-geo", "feed-geo-*", "regx"),
    bind("g-anchored", "^a$", "regx"),
    bind("g-bad", "pay-(", "regx"),
    bind("g-class", "^order\\.(created|paid)$", "regx"),
    bind("g-fanout", "*", "fanout"),
    bind("g-multi", "b", "direct"),
    bind("g-multi", "b", "regx"),
  }
  local function route(t)
    local answer, problem = p:call("route", { topic = "trade", message_type = t, bindings = binds })
    assert.is_nil(problem)
    return groups(answer)
  end

  it("defines the hooks of the shipped files only", function()
    assert.are.same({ route = true, retry = true, ["flow.intake"] = true, ["flow.group"] = true,
                      publish = false, route_message = false, connect = false, dead = false },
                    p:hooks())
  end)

  local cases = {
    { "pay-200", { "g-direct", "g-regx", "g-fanout" } },
    { "pay-500", { "g-regx", "g-fanout" } },
    { "pay-", { "g-fanout" } },                      -- \d+ needs a digit
    { "xpay-7y", { "g-regx", "g-fanout" } },         -- unanchored search
    { "PAY-200", { "g-fanout" } },                   -- case-sensitive
    { "feed-geo-update", { "g-geo", "g-fanout" } },
    { "feed-geo", { "g-geo", "g-fanout" } },         -- "-*" is zero or more '-'
    { "feed-ge", { "g-fanout" } },
    { "a", { "g-anchored", "g-fanout" } },
    { "ab", { "g-multi", "g-fanout" } },             -- anchors hold; one copy for g-multi
    { "order.paid", { "g-class", "g-fanout" } },
    { "order.paid.x", { "g-fanout" } },
    { "pay-(", { "g-fanout" } },                     -- a bad pattern matches nothing
    { "", { "g-fanout" } },
    { "*", { "g-fanout" } },                         -- fanout's "*" is not a direct type
  }
  for _, c in ipairs(cases) do
    it("routes '" .. c[1] .. "'", function()
      local want, got = {}, {}
      for _, g in ipairs(c[2]) do want[g] = true end
      for _, g in ipairs(route(c[1])) do got[g] = true end
      assert.are.same(want, got)
    end)
  end

  it("keeps each group's persistence and watermark", function()
    local answer = p:call("route", { topic = "trade", message_type = "x", bindings = {
      { group = "g", message_type = "*", bind_type = "fanout", persistent = false, watermark = 50 } } })
    assert.are.same({ { group = "g", persistent = false, watermark = 50 } }, answer.groups)
    assert.are.same({}, p:call("route", { topic = "trade", message_type = "pay-200" }).groups)
  end)
end)

describe("retry.lua", function()
  local p = assert(policy.load(SHIPPED))
  local NOW = 1700000000
  local function verdict(attempts, limit, expired)
    local answer, problem = p:call("retry", { attempts = attempts, reason = "nack",
                                             deliver_limit = limit or 100,
                                             expired_time = expired or 0, now = NOW })
    assert.is_nil(problem)
    return answer
  end

  local windows = {
    { 0, 0 }, { 1, 0 }, { 2, 0 }, { 3, 5000 }, { 9, 5000 }, { 10, 10000 }, { 19, 10000 },
    { 20, 20000 }, { 29, 20000 }, { 30, 40000 }, { 39, 40000 }, { 40, 80000 },
    { 49, 80000 }, { 50, 160000 }, { 99, 160000 },
  }
  for _, w in ipairs(windows) do
    it("waits " .. w[2] .. " ms after " .. w[1] .. " attempts", function()
      assert.are.same({ verdict = "retry", delay_ms = w[2] }, verdict(w[1]))
    end)
  end

  it("is dead at the deliver limit", function()
    assert.are.same({ verdict = "dead", reason = "deliver limit reached (100 attempts)" },
                    verdict(100, 100))
    assert.are.equal("dead", verdict(5, 3).verdict)
    assert.are.equal("dead", verdict(0, 0).verdict)
    assert.are.equal("retry", verdict(2, 3).verdict)
  end)

  it("is dead once expired (expiry <= now), never with expiry 0", function()
    assert.are.same({ verdict = "dead", reason = "expired" }, verdict(5, 100, NOW))
    assert.are.same({ verdict = "dead", reason = "expired" }, verdict(5, 100, NOW - 1))
    assert.are.equal("retry", verdict(5, 100, NOW + 1).verdict)
    assert.are.equal("retry", verdict(5, 100, 0).verdict)
    assert.are.equal("retry", verdict(5, 100, -1).verdict)
  end)
end)

describe("flow.lua", function()
  local p = assert(policy.load(SHIPPED))
  local function call(hook, args)
    local answer, problem = p:call(hook, args)
    assert.is_nil(problem)
    return answer
  end
  local function group(w) return call("flow.group", { group = "g", topic = "t", watermark = w }) end

  it("limits the intake to recievePermitsPerSecond with burst rate/2", function()
    assert.are.same({ rate = 20000, burst = 10000, window = 0 }, call("flow.intake", { permits = 20000 }))
    assert.are.same({ rate = 20001, burst = 10000, window = 0 }, call("flow.intake", { permits = 20001 }))
    assert.are.same({ rate = 1, burst = 1, window = 0 }, call("flow.intake", { permits = 1 }))
    assert.are.same({ rate = 0, burst = 0, window = 0 }, call("flow.intake", { permits = 0 }))
  end)

  it("limits a group to its watermark (<= 0 -> 6000; above 6000 honoured)", function()
    assert.are.same({ rate = 6000, burst = 3000, window = 1000 }, group(0))
    assert.are.same({ rate = 6000, burst = 3000, window = 1000 }, group(-3))
    assert.are.same({ rate = 100000, burst = 50000, window = 1000 }, group(100000))
    assert.are.same({ rate = 1000, burst = 500, window = 1000 }, group(1000))
    assert.are.same({ rate = 3, burst = 1, window = 1000 }, group(3))
    assert.are.same({ rate = 1, burst = 1, window = 1000 }, group(1)) -- never 0
  end)
end)
