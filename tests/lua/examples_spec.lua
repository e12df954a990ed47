-- Every example of lua/policies/examples/ through the broker's own code (the kiteq.policy
-- module), each loaded as the policy file its header says to install it as. Run from the
-- repository root after a build: busted --lua=luajit tests/lua
local h = require("tests.lua.helpers")

local bind, groups, call = h.bind, h.groups, h.call

describe("examples/publish.lua", function()
  local p = h.load_example("publish.lua", "publish.lua")
  local EXP = 1700003600
  local function publish(topic, body_size, properties)
    return call(p, "publish", {
      topic = topic, message_type = "pay-succ", group = "p-trade", properties = properties,
      body_size = body_size, expired_time = EXP, deliver_limit = 100, now = 1700000000 })
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
  local p = h.load_example("delay_by_property.lua", "publish.lua")
  local function publish(properties)
    return call(p, "publish", {
      topic = "trade", message_type = "pay-succ", group = "p-trade", properties = properties,
      body_size = 10, expired_time = 1700086400, deliver_limit = 100, now = 1700000000 })
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

describe("examples/routing_by_property.lua", function()
  local p = h.load_example("routing_by_property.lua", "routing.lua")
  local binds = { bind("s-eu", "pay-succ", "direct"), bind("s-us", "refund", "direct"),
                  bind("s-all", "*", "fanout", false) }
  local function route(properties, message_type)
    local got = groups(call(p, "route_message", { topic = "trade", message_type = message_type or
                                                  "pay-succ", properties = properties,
                                                  bindings = binds }))
    table.sort(got)
    return got
  end

  it("sends a message to the bound group of its region only", function()
    assert.are.same({ "s-eu" }, route({ region = "eu" }))
    assert.are.same({ "s-us" }, route({ region = "us" })) -- whatever its messageType
  end)

  it("routes as usual without a region, or for a region with no bound group", function()
    assert.are.same({ "s-all", "s-eu" }, route({}))
    assert.are.same({ "s-all" }, route({ region = "apac" }, "other"))
  end)

  it("keeps the chosen group's own persistence and watermark", function()
    local answer = call(p, "route_message", { topic = "trade", properties = { region = "all" },
      bindings = { { group = "s-all", message_type = "*", bind_type = "fanout",
                     persistent = false, watermark = 50 } } })
    assert.are.same({ { group = "s-all", persistent = false, watermark = 50 } }, answer.groups)
  end)

  it("is not memoised: the same (topic, messageType) goes by each message's region", function()
    assert.are.same({ "s-eu" }, route({ region = "eu" }))
    assert.are.same({ "s-us" }, route({ region = "us" }))
    assert.are.equal(0, p:stats().route_message.cache_hits)
  end)
end)

describe("examples/auth_allowlist.lua", function()
  local p = h.load_example("auth_allowlist.lua", "auth.lua")
  local function connect(c) return call(p, "connect", c) end

  it("lets a listed group in from its own addresses only", function()
    assert.are.same({ action = "accept" }, connect({ group = "s-trade-a", peer_ip = "10.0.0.7" }))
    assert.are.same({ action = "reject", reason = "group s-trade-a may not connect from " ..
                      "10.9.9.9" }, connect({ group = "s-trade-a", peer_ip = "10.9.9.9" }))
  end)

  it("lets unlisted groups in from anywhere", function()
    assert.are.same({ action = "accept" }, connect({ group = "p-trade", peer_ip = "10.9.9.9" }))
  end)

  it("caps the connections of s-trade-b at 4", function()
    assert.are.same({ action = "accept" }, connect({ group = "s-trade-b", connections = 3 }))
    assert.are.same({ action = "reject", reason = "group s-trade-b has its 4 connections " ..
                      "already" }, connect({ group = "s-trade-b", connections = 4 }))
  end)

  it("never lets a wrong secret in, whatever it answers", function()
    local answer, problem = p:call("connect", { group = "p-trade", secret_ok = false })
    assert.are.same({ action = "reject", reason = "unknown groupId or wrong secretKey" }, answer)
    assert.matches("the hook can only tighten", problem)
    assert.are.equal(2, p:stats().connect.rejects) -- the hook's own refusals only
  end)
end)

describe("examples/dead_to_handler.lua", function()
  local p = h.load_example("dead_to_handler.lua", "retry.lua")
  local handler = { bind("s-dead-handler", "dead", "direct"), bind("s-trade", "pay-succ") }
  local function dead(m) return p:call("dead", m) end

  it("hands the trade topic's dead letters to s-dead-handler", function()
    assert.are.same({ action = "handover", groups = { "s-dead-handler" } },
                    call(p, "dead", { topic = "trade", message_type = "pay-succ",
                                      reason = "deliver limit reached", bindings = handler }))
  end)

  it("drops debug messages and dead-letters other topics", function()
    assert.are.same({ action = "drop" }, call(p, "dead", { topic = "trade",
                                                           message_type = "debug-trace" }))
    assert.are.same({ action = "dlq" }, call(p, "dead", { topic = "user-profile",
                                                          message_type = "update" }))
  end)

  it("dead-letters when the handler has no binding on the topic", function()
    local answer, problem = dead({ topic = "trade", message_type = "pay-succ",
                                   bindings = { bind("s-trade", "pay-succ") } })
    assert.are.same({ action = "dlq" }, answer)
    assert.matches('none of the groups has a binding on topic trade, e.g. "s%-dead%-handler"',
                   problem)
  end)

  it("dead-letters a two-phase message that was never committed", function()
    local answer, problem = dead({ topic = "trade", message_type = "pay-succ", commit = false,
                                   bindings = handler })
    assert.are.same({ action = "dlq" }, answer)
    assert.matches("never committed cannot be handed to groups", problem)
  end)

  it("keeps the built-in retry (the example defines on_dead only)", function()
    local answer, problem = p:call("retry", { attempts = 3, reason = "nack" })
    assert.are.same({ verdict = "retry", delay_ms = 5000 }, answer)
    assert.matches("retry is not defined by the policies", problem)
  end)
end)

describe("the template spec (tests/lua/template/my_policies_spec.lua)", function()
  it("passes for the examples installed as a folder, and POLICIES_DIR runs only it", function()
    local dir, remove = h.folder({
      ["routing.lua"] = h.read(h.SHIPPED .. "/examples/routing_by_property.lua"),
      ["auth.lua"] = h.read(h.SHIPPED .. "/examples/auth_allowlist.lua"),
      ["retry.lua"] = h.read(h.SHIPPED .. "/examples/dead_to_handler.lua"),
      ["publish.lua"] = h.read(h.SHIPPED .. "/examples/publish.lua"),
    })
    local run = io.popen("POLICIES_DIR='" .. dir .. "' busted --lua=luajit " ..
                         "tests/lua/template/my_policies_spec.lua 2>&1; echo \"exit=$?\"")
    local out = run:read("*a")
    run:close()
    remove()
    -- the load, route_message, dead, publish and connect; route, retry and flow are pending
    assert(out:find("5 successes / 0 failures / 0 errors / 4 pending", 1, true), out)
    assert(out:find("exit=0", 1, true), out)
  end)
end)
