-- The shipped policies (lua/policies/*.lua) in plain LuaJIT, as the broker runs them: a
-- sandbox with string, table, math, bit and kq only (unknown globals raise), and
-- kq.regex_match backed by the same PCRE2 library through a tiny FFI shim.
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
    string = copy(string), table = copy(table), math = copy(math), bit = copy(bit),
    kq = { regex_match = regex_match },
  }
  env.string.dump = nil
  return setmetatable(env, {
    __index = function(_, k) error("undefined global '" .. tostring(k) .. "'", 2) end,
    __newindex = function(_, k) error("assignment to global '" .. tostring(k) .. "'", 2) end,
  })
end

local function load_policy(file)
  local path = DIR .. "/" .. file
  local f = assert(io.open(path, "rb"))
  local src = f:read("*a")
  f:close()
  assert(src:byte(1) ~= 27, path .. ": bytecode is refused by the broker")
  local chunk = assert(loadstring(src, "@" .. path))
  setfenv(chunk, sandbox())
  local m = chunk()
  assert(type(m) == "table", path .. " must return a table of hooks")
  return m
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
