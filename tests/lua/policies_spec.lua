-- The shipped policies (lua/policies/*.lua) in plain LuaJIT, as the broker runs them: a
-- sandbox with string, table, math, bit and kq only (unknown globals raise), Lua patterns
-- bounded as in the broker, and kq.regex_match backed by the same PCRE2 library through a
-- tiny FFI shim.
-- Run from the repository root: busted --lua=luajit tests/lua
-- Copy this file to test an edited policy before sending the broker a SIGHUP (POLICIES_DIR
-- selects another folder: POLICIES_DIR=/etc/kiteq/policies busted --lua=luajit tests/lua).

local ffi = require("ffi")

local DIR = os.getenv("POLICIES_DIR") or "lua/policies"

-- ---- kq.regex_match: unanchored PCRE2 search, a bad pattern -> false, reason ----------------
ffi.cdef [[
typedef struct pcre2_real_code_8 pcre2_code_8;
typedef struct pcre2_real_match_data_8 pcre2_match_data_8;
pcre2_code_8 *pcre2_compile_8(const char *, size_t, uint32_t, int *, size_t *, void *);
pcre2_match_data_8 *pcre2_match_data_create_8(uint32_t, void *);
int pcre2_match_8(const pcre2_code_8 *, const char *, size_t, size_t, uint32_t,
                  pcre2_match_data_8 *, void *);
void pcre2_code_free_8(pcre2_code_8 *);
void pcre2_match_data_free_8(pcre2_match_data_8 *);
int pcre2_get_error_message_8(int, char *, size_t);
]]
local ok, pcre = pcall(ffi.load, "pcre2-8")
if not ok then pcre = ffi.load("libpcre2-8.so.0") end
local PCRE2_UTF = 0x00080000
local compiled = {}

local function regex_match(pattern, subject)
  assert(type(pattern) == "string" and type(subject) == "string", "strings expected")
  local re = compiled[pattern]
  if re == nil then
    local ec, off = ffi.new("int[1]"), ffi.new("size_t[1]")
    local code = pcre.pcre2_compile_8(pattern, #pattern, PCRE2_UTF, ec, off, nil)
    if code == nil then
      local buf = ffi.new("char[128]")
      pcre.pcre2_get_error_message_8(ec[0], buf, 128)
      re = { err = ffi.string(buf) }
    else
      re = { code = ffi.gc(code, pcre.pcre2_code_free_8) }
    end
    compiled[pattern] = re
  end
  if not re.code then return false, re.err end
  local md = pcre.pcre2_match_data_create_8(1, nil)
  local rc = pcre.pcre2_match_8(re.code, subject, #subject, 0, 0, md, nil)
  pcre.pcre2_match_data_free_8(md)
  return rc >= 0
end

-- ---- Lua patterns, bounded as in the broker (src/policy/lua_patterns.c: keep in step) -------
-- Lua's matcher backtracks; the broker charges each find/match/gmatch/gsub the worst case of
-- its matching against the hook call's budget and refuses to start one that does not fit.
-- Here each pattern call may use the whole budget of a call (in the broker the hook's own
-- instructions and its earlier pattern calls count against the same budget).
local CALL_BUDGET = 1000000 -- KQ_POLICY_CALL_INSTRUCTIONS
local COST_MAX = 1e18
local HINT = "anchor it with ^, use fewer repetitions (* + - ?), or a plain find " ..
             "(string.find(s, p, 1, true))"

-- Where the single-byte class at index i (0-based, as in C) ends.
local function class_end(p, i, m)
  local c = p:byte(i + 1)
  if c == 37 then return i + 2 < m and i + 2 or m end -- %x
  if c ~= 91 then return i + 1 end                     -- not [set]
  i = i + 1
  if i < m and p:byte(i + 1) == 94 then i = i + 1 end  -- [^
  repeat                                                -- the first byte may be ']'
    if i >= m then return m end
    local b = p:byte(i + 1)
    i = i + 1
    if b == 37 and i < m then i = i + 1 end
  until not (i < m and p:byte(i + 1) ~= 93)
  return i < m and i + 1 or m
end

-- kq_lua_pattern_cost: an upper bound of the matcher's steps for pattern p on n bytes. (The
-- helpers call the host's string functions by name: s:find() may reach the bounded ones.)
local function pattern_cost(p, n, gmatch)
  local m = #p
  local nul = string.find(p, "\0", 1, true)
  if nul then m = nul - 1 end
  local closers = m
  while closers > 0 and p:byte(closers) == 41 do closers = closers - 1 end
  local anchored = not gmatch and m > 0 and p:byte(1) == 94
  local i = anchored and 1 or 0
  local u, comb, pow2 = 0, anchored and 1 or n + 1, 1
  local function ways()
    local v = comb * pow2
    return v < COST_MAX and v or COST_MAX
  end
  local total = 0
  while i < m and total < COST_MAX do
    local c, d = p:byte(i + 1), i + 1 < m and p:byte(i + 2) or nil
    local stop, extra
    if c == 40 or c == 41 then                         -- ( )
      stop = i + 1 + ((c == 40 and d == 41) and 1 or 0)
    elseif c == 36 and i + 1 == m then                 -- final $
      stop = m
    elseif c == 37 and d == 98 then                    -- %bxy
      stop, extra = i + 4 < m and i + 4 or m, n
    elseif c == 37 and d == 102 then                   -- %f[set]
      stop = i + 2 < m and class_end(p, i + 2, m) or m
    elseif c == 37 and d and d >= 48 and d <= 57 then  -- %1
      stop, extra = i + 2, n
    end
    if stop then
      total = total + ways() * ((stop - i) + (extra or 0))
      i = stop
    else
      stop = class_end(p, i, m)
      local width = stop - i
      total = total + ways() * width
      local q = stop < m and string.char(p:byte(stop + 1)) or ""
      if q ~= "" and string.find("*+-?", q, 1, true) then
        stop = stop + 1
        if stop >= closers then
          total = total + (ways() + (n + 1) * width)
        else
          if q == "?" then
            pow2 = pow2 < COST_MAX and pow2 * 2 or COST_MAX
          else
            u = u + 1
            comb = anchored and comb * (n + u) / u or comb * (n + 1 + u) / (u + 1)
            if comb > COST_MAX then comb = COST_MAX end
          end
          total = total + ways() * (width + 1)
        end
      end
      i = stop
    end
  end
  total = total + ways()
  return total < COST_MAX and total or COST_MAX
end

-- Where find and match start (LuaJIT's rules), 0-based.
local function start_of(init, len)
  init = init or 1
  init = init < 0 and init + len or init - 1
  if init < 0 then return 0 end
  return init > len and len or init
end

local function bounded_string()
  local S = {}
  for k, v in pairs(string) do S[k] = v end
  S.dump = nil
  local function guarded(name, original, gmatch, with_init)
    return function(s, p, ...)
      local ss = type(s) == "number" and tostring(s) or s
      local ps = type(p) == "number" and tostring(p) or p
      if type(ss) ~= "string" or type(ps) ~= "string" then return original(s, p, ...) end
      local from = with_init and start_of((...), #ss) or 0
      local cost = pattern_cost(ps, #ss - from, gmatch)
      if cost > CALL_BUDGET then
        error(string.format("%s: pattern on a %d-byte subject: worst case %.3g steps, more " ..
                            "than the %d left of the budget (%d per run); %s", name,
                            #ss - from, cost, CALL_BUDGET, CALL_BUDGET, HINT), 2)
      end
      return original(s, p, ...)
    end
  end
  local find = guarded("string.find", string.find, false, true)
  S.find = function(s, p, init, plain)
    if plain or (type(p) == "string" and not string.find(p, "[%^%$%*%+%?%.%(%[%%%-]")) then
      return string.find(s, p, init, true) -- a linear search in the broker
    end
    return find(s, p, init, plain)
  end
  S.match = guarded("string.match", string.match, false, true)
  S.gmatch = guarded("string.gmatch", string.gmatch, true, false)
  S.gsub = guarded("string.gsub", string.gsub, false, false)
  return S
end

-- ---- the broker's sandbox ---------------------------------------------------------------------
local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function sandbox()
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    rawequal = rawequal, rawget = rawget, rawset = rawset, select = select,
    setmetatable = setmetatable, getmetatable = getmetatable, tonumber = tonumber,
    tostring = tostring, type = type, unpack = unpack,
    string = bounded_string(), table = copy(table), math = copy(math), bit = copy(bit),
    kq = { regex_match = regex_match },
  }
  return setmetatable(env, {
    __index = function(_, k) error("undefined global '" .. tostring(k) .. "'", 2) end,
    __newindex = function(_, k) error("assignment to global '" .. tostring(k) .. "'", 2) end,
  })
end

-- In the broker s:find() reaches the bounded functions too (the string metatable points to
-- them): while policy code runs, so does this one.
local string_mt = getmetatable("")
local function with_bounded_methods(S, f)
  return function(...)
    local saved = string_mt.__index
    string_mt.__index = S
    local res = { n = 0 }
    local function keep(ok, ...) res.n = select("#", ...); res.ok = ok; res.v = { ... } end
    keep(pcall(f, ...))
    string_mt.__index = saved
    if not res.ok then error(res.v[1], 0) end
    return unpack(res.v, 1, res.n)
  end
end

local function load_source(src, path)
  assert(src:byte(1) ~= 27, path .. ": bytecode is refused by the broker")
  local chunk = assert(loadstring(src, "@" .. path))
  local env = sandbox()
  setfenv(chunk, env)
  local m = with_bounded_methods(env.string, chunk)()
  assert(type(m) == "table", path .. " must return a table of hooks")
  for k, f in pairs(m) do m[k] = with_bounded_methods(env.string, f) end
  return m
end

local function load_policy(file)
  local path = DIR .. "/" .. file
  local f = assert(io.open(path, "rb"))
  local src = f:read("*a")
  f:close()
  return load_source(src, path)
end

local function bind(group, message_type, bind_type, persistent)
  return { group = group, topic = "trade", message_type = message_type,
           bind_type = bind_type, watermark = 0, persistent = persistent ~= false }
end

describe("kq.regex_match shim", function()
  it("searches unanchored and reports bad patterns", function()
    assert.is_true(regex_match("pay-\\d+", "xpay-7y"))
    assert.is_false(regex_match("^a$", "ab"))
    local m, why = regex_match("pay-(", "pay-(")
    assert.is_false(m)
    assert.is_string(why)
  end)
end)

describe("Lua patterns in the sandbox", function()
  it("are bounded with the broker's numbers (test_policy.c test_pattern_costs)", function()
    local cases = {
      { "a*a*c", 200, false, 5555908 },
      { "a*a*a*a*a*a*a*a*c", 31, false, 1324469508 },
      { "^(.-)%-(.-)$", 100, false, 26464 },
      { "(.-)%-(.-)", 100, false, 51813 },
      { "[%w_]+", 100, true, 1212 },
      { "%b()", 100, false, 10605 },
      { "x?y?z?", 20, true, 588 },
      { "[]a-z]*$", 50, false, 12240 },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(c[4], pattern_cost(c[1], c[2], c[3]), c[1])
    end
  end)

  local hooks = load_source([[
local M = {}
local BACKTRACK = string.rep("a*", 8) .. "c"
function M.route(topic, t, binds)
  if t == "plain" then
    local big = string.rep("a*", 500000)
    return { tostring(big:find(BACKTRACK, 1, true)), tostring(string.find(big, "a*a*", 999997, true)) }
  end
  if t == "cheap" then return { ("prod-eu"):match("^(%a+)%-"), (("a.b"):gsub("%.", "_")) } end
  if t:sub(1, 6) == "gmatch" then for _ in t:gmatch(BACKTRACK) do end end
  return t:find(BACKTRACK) and {} or nil
end
return M
]], "backtrack.lua")

  it("refuses a backtracking pattern before it runs, also called as a method", function()
    local ok, err = pcall(hooks.route, "trade", string.rep("a", 30) .. "b", {})
    assert.is_false(ok)
    assert.matches("backtrack.lua:10: string.find: pattern on a 31%-byte subject: worst case", err)
    ok, err = pcall(hooks.route, "trade", "gmatch" .. string.rep("a", 30) .. "b", {})
    assert.is_false(ok)
    assert.matches("string.gmatch: pattern on a 37%-byte subject", err)
    assert.is_nil(hooks.route("trade", "pay-200", {})) -- short subjects stay cheap
  end)

  it("keeps plain finds and cheap patterns", function()
    assert.are.same({ "nil", "999997" }, hooks.route("trade", "plain", {}))
    assert.are.same({ "prod", "a_b" }, hooks.route("trade", "cheap", {}))
    assert.are.equal(string.find, getmetatable("").__index.find) -- restored after the call
  end)
end)

describe("routing.lua", function()
  local routing = load_policy("routing.lua")
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

  it("exports only route", function()
    for k, v in pairs(routing) do
      assert.are.equal("route", k)
      assert.are.equal("function", type(v))
    end
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
      local got = routing.route("trade", c[1], binds)
      local want = {}
      for _, g in ipairs(c[2]) do want[g] = true end
      local seen = {}
      for _, g in ipairs(got) do
        assert.is_nil(seen[g], "group " .. g .. " twice")
        seen[g] = true
      end
      assert.are.same(want, seen)
    end)
  end

  it("keeps binding order and returns an empty list without bindings", function()
    assert.are.same({ "g-direct", "g-regx", "g-fanout" }, routing.route("trade", "pay-200", binds))
    assert.are.same({}, routing.route("trade", "pay-200", {}))
  end)
end)

describe("retry.lua", function()
  local retry = load_policy("retry.lua").retry
  local NOW = 1700000000
  local function verdict(attempts, limit, expired)
    return retry({ attempts = attempts, reason = "nack", deliver_limit = limit or 100,
                   expired_time = expired or 0, now = NOW })
  end

  local windows = {
    { 0, 0 }, { 1, 0 }, { 2, 0 }, { 3, 5000 }, { 9, 5000 }, { 10, 10000 }, { 19, 10000 },
    { 20, 20000 }, { 29, 20000 }, { 30, 40000 }, { 39, 40000 }, { 40, 80000 },
    { 49, 80000 }, { 50, 160000 }, { 99, 160000 },
  }
  for _, w in ipairs(windows) do
    it("waits " .. w[2] .. " ms after " .. w[1] .. " attempts", function()
      local v, delay = verdict(w[1])
      assert.are.equal("retry", v)
      assert.are.equal(w[2], delay)
    end)
  end

  it("is dead at the deliver limit", function()
    local v, why = verdict(100, 100)
    assert.are.equal("dead", v)
    assert.are.equal("deliver limit reached (100 attempts)", why)
    assert.are.equal("dead", (verdict(5, 3)))
    assert.are.equal("dead", (verdict(0, 0)))
    assert.are.equal("retry", (verdict(2, 3)))
  end)

  it("is dead once expired (expiry <= now), never with expiry 0", function()
    assert.are.same({ "dead", "expired" }, { verdict(5, 100, NOW) })
    assert.are.same({ "dead", "expired" }, { verdict(5, 100, NOW - 1) })
    assert.are.equal("retry", (verdict(5, 100, NOW + 1)))
    assert.are.equal("retry", (verdict(5, 100, 0)))
    assert.are.equal("retry", (verdict(5, 100, -1)))
  end)

  it("returns whole milliseconds within 24 h", function()
    for a = 0, 200 do
      local v, d = verdict(a, 1000)
      assert.are.equal("retry", v)
      assert.is_true(d >= 0 and d <= 86400000 and d == math.floor(d))
    end
  end)
end)

describe("flow.lua", function()
  local flow = load_policy("flow.lua")
  local function group(w)
    return flow.group("g", "t", { inflight = 0, backlog = 0, recent_failures = 0, watermark = w })
  end

  it("limits the intake to recievePermitsPerSecond with burst rate/2", function()
    assert.are.same({ rate = 20000, burst = 10000, window = 0 }, flow.intake(20000))
    assert.are.same({ rate = 20001, burst = 10000, window = 0 }, flow.intake(20001))
    assert.are.same({ rate = 1, burst = 1, window = 0 }, flow.intake(1))
    assert.are.same({ rate = 0, burst = 0, window = 0 }, flow.intake(0)) -- unlimited
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
  local path = "lua/policies/examples/publish.lua"
  local f = assert(io.open(path, "rb"))
  local on_publish = load_source(f:read("*a"), path).on_publish
  f:close()
  local function msg(topic, body_size, properties)
    return { message_id = "0123456789abcdef0123456789abcdef", topic = topic,
             message_type = "pay-succ", group = "p-trade", properties = properties or {},
             body_size = body_size, fly = false, commit = true, expired_time = 1700000000,
             deliver_limit = 100, peer = "127.0.0.1:5000" }
  end

  it("rejects a body over its topic's limit, with a reason naming both", function()
    assert.are.same({ "reject", "body of 65537 bytes is over the 65536 bytes topic " ..
                      "user-profile accepts" }, { on_publish(msg("user-profile", 65537)) })
    assert.are.same({ properties = { region = "default" } },
                    on_publish(msg("user-profile", 65536)))
    assert.are.same({ properties = { region = "default" } }, on_publish(msg("trade", 1e7)))
  end)

  it("adds a region only where there is none", function()
    assert.is_nil(on_publish(msg("trade", 10, { region = "eu" })))
    assert.are.same({ properties = { region = "default" } },
                    on_publish(msg("trade", 10, { other = "x" })))
  end)
end)

describe("examples/delay_by_property.lua", function()
  local path = "lua/policies/examples/delay_by_property.lua"
  local f = assert(io.open(path, "rb"))
  local on_publish = load_source(f:read("*a"), path).on_publish
  f:close()
  local function msg(properties)
    return { message_id = "0123456789abcdef0123456789abcdef", topic = "trade",
             message_type = "pay-succ", group = "p-trade", properties = properties,
             body_size = 10, fly = false, commit = true, expired_time = 1700000000,
             deliver_limit = 100, peer = "127.0.0.1:5000" }
  end

  it("delays by the priority property", function()
    assert.are.same({ delay_ms = 60000 }, on_publish(msg({ priority = "low" })))
    assert.are.same({ delay_ms = 600000 }, on_publish(msg({ priority = "bulk" })))
  end)

  it("sends high and unmarked messages at once, refuses an unknown priority", function()
    assert.is_nil(on_publish(msg({ priority = "high" })))
    assert.is_nil(on_publish(msg({})))
    assert.are.same({ "reject", "unknown priority 'urgent' (high, low or bulk)" },
                    { on_publish(msg({ priority = "urgent" })) })
  end)
end)
