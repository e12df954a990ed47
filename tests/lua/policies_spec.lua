-- The shipped policies (lua/policies/*.lua and lua/policies/examples/) run by the broker's own
-- code: the kiteq.policy module (src/policy/module) loads a folder in the broker's sandbox,
-- with its budgets and self-tests, and answers each call as the broker applies it (after C's
-- validation and fallbacks). No Lua re-implementation of the sandbox here.
-- Run from the repository root after a build: busted --lua=luajit tests/lua
-- This spec always tests the shipped folder; for your own policies copy
-- tests/lua/template/my_policies_spec.lua (docs/POLICIES.md, "Testing a policy").

local policy = require("kiteq.policy")

local SHIPPED = "lua/policies"

-- policy.load of a throw-away folder holding files = { ["routing.lua"] = "source", ... }
-- (a loaded generation needs its files no more).
local function load_files(files)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p '" .. dir .. "'") == 0)
  for name, src in pairs(files) do
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(src)
    f:close()
  end
  local p, err = policy.load(dir)
  os.execute("rm -rf '" .. dir .. "'")
  return p, err
end

local function bind(group, message_type, bind_type, persistent)
  return { group = group, message_type = message_type, bind_type = bind_type,
           persistent = persistent ~= false }
end

local function groups(answer)
  local out = {}
  for _, g in ipairs(answer.groups) do out[#out + 1] = g.group end
  return out
end

describe("the module", function()
  it("names the hooks and the budgets of a call", function()
    assert.are.same({ "route", "retry", "flow.intake", "flow.group", "publish" },
                    { unpack(policy.hooks, 1, 5) })
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
    assert.has_error(function() p:call("nope", {}) end,
                     "unknown hook 'nope' (hooks: route retry flow.intake flow.group publish)")
    assert.has_error(function() p:call("retry", { attempts = "3" }) end,
                     "attempts: must be a whole number")
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
    assert.matches("stopped: over the instruction budget", problem)
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

describe("examples/publish.lua", function()
  local f = assert(io.open(SHIPPED .. "/examples/publish.lua", "rb"))
  local p = assert(load_files({ ["publish.lua"] = f:read("*a") }))
  f:close()
  local EXP = 1700003600
  local function publish(topic, body_size, properties)
    local answer, problem = p:call("publish", {
      topic = topic, message_type = "pay-succ", group = "p-trade", properties = properties,
      body_size = body_size, expired_time = EXP, deliver_limit = 100, now = 1700000000 })
    assert.is_nil(problem)
    return answer
  end

  it("rejects a body over its topic's limit, with a reason naming both", function()
    assert.are.same({ action = "reject", reason = "body of 65537 bytes is over the 65536 " ..
                      "bytes topic user-profile accepts" }, publish("user-profile", 65537))
    local added = { action = "change", properties = { region = "default" }, expired_time = EXP,
                    deliver_limit = 100 }
    assert.are.same(added, publish("user-profile", 65536))
    assert.are.same(added, publish("trade", 1e7))
  end)

  it("adds a region only where there is none", function()
    assert.are.same({ action = "accept" }, publish("trade", 10, { region = "eu" }))
    assert.are.same({ action = "change", properties = { other = "x", region = "default" },
                      expired_time = EXP, deliver_limit = 100 },
                    publish("trade", 10, { other = "x" }))
  end)
end)

describe("examples/delay_by_property.lua", function()
  local f = assert(io.open(SHIPPED .. "/examples/delay_by_property.lua", "rb"))
  local p = assert(load_files({ ["publish.lua"] = f:read("*a") }))
  f:close()
  local function publish(properties)
    local answer, problem = p:call("publish", {
      topic = "trade", message_type = "pay-succ", group = "p-trade", properties = properties,
      body_size = 10, expired_time = 1700086400, deliver_limit = 100, now = 1700000000 })
    assert.is_nil(problem)
    return answer
  end

  it("delays by the priority property", function()
    assert.are.equal(60000, publish({ priority = "low" }).delay_ms)
    assert.are.equal(600000, publish({ priority = "bulk" }).delay_ms)
  end)

  it("sends high and unmarked messages at once, refuses an unknown priority", function()
    assert.are.same({ action = "accept" }, publish({ priority = "high" }))
    assert.are.same({ action = "accept" }, publish({}))
    assert.are.same({ action = "reject", reason = "unknown priority 'urgent' (high, low or bulk)" },
                    publish({ priority = "urgent" }))
  end)
end)
