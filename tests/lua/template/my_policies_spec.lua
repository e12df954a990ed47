-- A template spec for your own policies folder: copy it next to your policies, change the
-- cases to what your hooks should answer, and run it before sending the broker a SIGHUP:
--
--   POLICIES_DIR=/etc/kiteq/policies busted --lua=luajit my_policies_spec.lua
--
-- (only this spec runs). require("kiteq.policy") is the broker's own code (installed under
-- LuaJIT's cpath by `cmake --install`; in a build tree add --cpath=BUILD/lua/?.so): the
-- folder is loaded in the broker's sandbox with its budgets and self-tests, and each call
-- answers as the broker applies it. The second answer of p:call says why a call did not use
-- your hook's answer as given (an error, a budget overrun such as an endless loop, an
-- invalid answer, a hook not defined): assert it is nil. docs/POLICIES.md lists each hook's
-- arguments and answers.
--
-- One case per hook; a case whose hook your folder does not define shows as pending (delete
-- it, or define the hook). The cases answer for the shipped lua/policies (route, retry,
-- flow: the default folder, CI runs it) and for the examples of lua/policies/examples
-- installed as routing.lua (routing_by_property), auth.lua (auth_allowlist), retry.lua
-- (dead_to_handler) and publish.lua (publish).

local policy = require("kiteq.policy")

local DIR = os.getenv("POLICIES_DIR") or "lua/policies"

-- Calls a hook and fails the test when the policy's own answer was not applied as given.
local function call(p, hook, args)
  local answer, problem = p:call(hook, args)
  assert(problem == nil, problem)
  return answer
end

describe("policies in " .. DIR, function()
  local p, err = policy.load(DIR)
  local defined = p and p:hooks() or {}

  it("load and pass the broker's self-test", function()
    assert(p, err)
  end)

  -- it(title, fn) when the folder defines hook, else a pending case saying so
  local function case(hook, title, fn)
    if defined[hook] then
      it(title, fn)
    else
      pending(title .. " (" .. DIR .. " does not define " .. hook .. ")")
    end
  end

  case("route", "route pay-200 to the direct and the fanout group", function()
    local answer = call(p, "route", {
      topic = "trade", message_type = "pay-200",
      bindings = {
        { group = "s-direct", message_type = "pay-200", bind_type = "direct" },
        { group = "s-regx", message_type = "^refund-", bind_type = "regx" },
        { group = "s-all", message_type = "*", bind_type = "fanout", persistent = false },
      },
    })
    local got = {}
    for _, g in ipairs(answer.groups) do got[g.group] = g.persistent end
    assert.are.same({ ["s-direct"] = true, ["s-all"] = false }, got)
  end)

  case("route_message", "route a message of region eu to s-eu only", function()
    local answer = call(p, "route_message", {
      topic = "trade", message_type = "pay-200", properties = { region = "eu" },
      bindings = {
        { group = "s-eu", message_type = "pay-200" },
        { group = "s-all", message_type = "*", bind_type = "fanout" },
      },
    })
    assert.are.same({ { group = "s-eu", persistent = true, watermark = 6000 } }, answer.groups)
  end)

  case("retry", "retry a nacked message after 5 s at the third attempt", function()
    assert.are.same({ verdict = "retry", delay_ms = 5000 },
                    call(p, "retry", { attempts = 3, reason = "nack", deliver_limit = 100 }))
    assert.are.equal("dead", call(p, "retry", { attempts = 100, deliver_limit = 100 }).verdict)
  end)

  case("dead", "hand trade's dead letters to s-dead-handler", function()
    assert.are.same({ action = "handover", groups = { "s-dead-handler" } }, call(p, "dead", {
      topic = "trade", message_type = "pay-200", attempts = 100, reason = "deliver limit reached",
      bindings = { { group = "s-dead-handler", message_type = "dead" } },
    }))
  end)

  case("flow.intake", "limit the intake to the permits with burst permits / 2", function()
    assert.are.same({ rate = 20000, burst = 10000, window = 0 },
                    call(p, "flow.intake", { permits = 20000 }))
  end)

  case("flow.group", "limit a group to its watermark", function()
    assert.are.same({ rate = 1000, burst = 500, window = 1000 },
                    call(p, "flow.group", { group = "s-direct", topic = "trade", watermark = 1000 }))
  end)

  case("publish", "refuse a profile body over 64 KiB", function()
    local answer = call(p, "publish", { topic = "user-profile", message_type = "update",
                                        body_size = 65537, properties = { region = "eu" } })
    assert.are.equal("reject", answer.action)
  end)

  case("connect", "let s-trade-a in from its own addresses only", function()
    assert.are.same({ action = "accept" },
                    call(p, "connect", { group = "s-trade-a", peer_ip = "127.0.0.1" }))
    assert.are.equal("reject",
                     call(p, "connect", { group = "s-trade-a", peer_ip = "10.9.9.9" }).action)
  end)
end)
