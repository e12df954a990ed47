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
-- arguments and answers. Without POLICIES_DIR it tests the shipped lua/policies (CI runs it).

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

  it("load and pass the broker's self-test", function()
    assert(p, err)
  end)

  it("route pay-200 to the direct and the fanout group", function()
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

  it("retry a nacked message after 5 s at the third attempt", function()
    assert.are.same({ verdict = "retry", delay_ms = 5000 },
                    call(p, "retry", { attempts = 3, reason = "nack", deliver_limit = 100 }))
  end)

  it("give up at the deliver limit", function()
    assert.are.equal("dead", call(p, "retry", { attempts = 100, deliver_limit = 100 }).verdict)
  end)

  it("limit a group to its watermark", function()
    assert.are.same({ rate = 1000, burst = 500, window = 1000 },
                    call(p, "flow.group", { group = "s-direct", topic = "trade", watermark = 1000 }))
  end)
end)
