-- Every shipped config file (lua/config/*.lua and examples/*.lua) and the loader's verdict on
-- broken samples, through the broker's own config loader: kiteq.policy's load_config runs
-- the file exactly as `kiteq CONFIG` reads it (src/config: its sandbox, budgets and checks)
-- and answers the selected cluster as loaded, or every problem. No Lua copy of its rules.
-- Run from the repository root after a build: busted --lua=luajit tests/lua
local policy = require("kiteq.policy")

local function config_files()
  local files = {}
  local p = io.popen("ls lua/config/*.lua lua/config/examples/*.lua 2>/dev/null")
  for line in p:lines() do files[#files + 1] = line end
  p:close()
  return files
end

local function load(path)
  local cfg, err = policy.load_config(path)
  assert(cfg, err)
  return cfg
end

-- A Lua table as config source text ("return { ... }"), keys sorted.
local function source(v, indent)
  indent = indent or ""
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for _, k in ipairs(keys) do
    local key = type(k) == "number" and "[" .. k .. "]" or string.format("[%q]", k)
    out[#out + 1] = indent .. "  " .. key .. " = " .. source(v[k], indent .. "  ") .. ","
  end
  return "{\n" .. table.concat(out, "\n") .. "\n" .. indent .. "}"
end

local function load_table(cfg)
  return policy.load_config("sample.lua", nil, "return " .. source(cfg))
end

describe("shipped config files", function()
  local files = config_files()

  it("include cluster.lua and memory.lua", function()
    local names = {}
    for _, f in ipairs(files) do names[f] = true end
    assert.is_true(names["lua/config/cluster.lua"])
    assert.is_true(names["lua/config/memory.lua"])
  end)

  for _, path in ipairs(files) do
    it(path .. " loads through the broker's config loader", function()
      assert.is_string(load(path).cluster)
    end)
  end

  it("cluster.lua is the documented default", function()
    local dev = load("lua/config/cluster.lua")
    assert.are.equal("dev", dev.cluster)
    assert.are.equal("127.0.0.1:13800", dev.bind)
    assert.are.equal("file://./data?fsync=group", dev.db)
    assert.are.same({ "trade", "user-profile" }, dev.topics)
    local types = {}
    for _, b in ipairs(dev.bindings) do types[b.bind_type] = true end
    assert.are.same({ direct = true, regx = true, fanout = true }, types)
    assert.is_true(#dev.groups >= 2)
  end)

  it("memory.lua uses the memory store", function()
    assert.are.equal("memory://", load("lua/config/memory.lua").db)
  end)
end)

describe("the config loader", function()
  -- a fresh, valid config for each case
  local function good()
    return {
      default = "dev",
      clusters = { dev = { topics = { "trade" }, bind = "127.0.0.1:13800",
                           groups = { g = "s" } } },
      bindings = { { groupIds = { "g" }, topic = "trade", messageType = "m" } },
    }
  end
  -- { what is broken, how, the problem the loader must name }
  local breakers = {
    { "unknown top-level key", function(c) c.extra = 1 end, "extra: unknown key" },
    { "unknown cluster key", function(c) c.clusters.dev.delivrySeconds = 5 end,
      "clusters.dev.delivrySeconds: unknown key (did you mean deliverySeconds?)" },
    { "no clusters", function(c) c.clusters = {} end, "clusters: must define at least one" },
    { "default names no cluster", function(c) c.default = "nope" end,
      'default: cluster "nope" not found' },
    { "topics not strings", function(c) c.clusters.dev.topics = { 1 } end,
      "clusters.dev.topics[1]: must be a string" },
    { "duplicate topic", function(c) c.clusters.dev.topics = { "a", "a" } end,
      "clusters.dev.topics[2]: duplicate topic" },
    { "bad port", function(c) c.clusters.dev.bind = "127.0.0.1:70000" end,
      "clusters.dev.bind: must be \"host:port\"" },
    { "recoverSeconds 0", function(c) c.clusters.dev.recoverSeconds = 0 end,
      "clusters.dev.recoverSeconds: must be an integer >= 1" },
    { "dlqExecHour 24", function(c) c.clusters.dev.dlqExecHour = 24 end,
      "clusters.dev.dlqExecHour: must be an integer 0-23" },
    { "binding to an unknown topic", function(c) c.bindings[1].topic = "nope" end,
      "bindings[1].topic: names a topic that no cluster lists" },
    { "bad bindType", function(c) c.bindings[1].bindType = "topic" end,
      "bindings[1].bindType: must be \"direct\", \"regx\" or \"fanout\"" },
    { "bindType 3", function(c) c.bindings[1].bindType = 3 end, "(got 3)" },
    { "empty group id", function(c) c.bindings[1].groupIds = { "" } end,
      "bindings[1].groupIds[1]: must be a name" },
    { "direct without messageType", function(c) c.bindings[1].messageType = nil end,
      "bindings[1].messageType: is required for direct and regx bindings" },
    { "empty secret", function(c) c.clusters.dev.groups = { g = "" } end,
      "clusters.dev.groups.g: a secret must not be empty" },
    { "bad registry", function(c) c.registry = "etcd://x" end, "registry: must be \"\"" },
    { "a group twice in groupIds", function(c) c.bindings[1].groupIds = { "g", "g" } end,
      "bindings[1].groupIds[2]: this group is listed twice" },
    { "a bound group not in groups", function(c) c.bindings[1].groupIds = { "ghost" } end,
      "names a group that is not in groups" },
    { "admin beyond loopback without adminToken", function(c)
        c.clusters.dev.admin = "0.0.0.0:13801"
      end, "adminToken: required when admin listens beyond loopback" },
    { "short adminToken", function(c) c.clusters.dev.adminToken = "short" end,
      "clusters.dev.adminToken: must be 16-256 characters" },
  }

  it("accepts the valid sample, as loaded", function()
    local cfg = assert(load_table(good()))
    assert.are.same({ "trade" }, cfg.topics)
    assert.are.same({ { group = "g", topic = "trade", message_type = "m", bind_type = "direct",
                        watermark = 6000, persistent = true } }, cfg.bindings)
  end)

  it("accepts any bound group when no groups are configured", function()
    local cfg = good()
    cfg.clusters.dev.groups = nil
    cfg.bindings[1].groupIds = { "anyone" }
    assert.are.same({}, assert(load_table(cfg)).groups)
  end)

  it("takes a fanout binding's messageType as \"*\" (and warns)", function()
    local cfg = good()
    cfg.bindings[1].bindType = "fanout"
    assert.are.equal("*", assert(load_table(cfg)).bindings[1].message_type)
  end)

  for _, b in ipairs(breakers) do
    it("rejects: " .. b[1], function()
      local cfg = good()
      b[2](cfg)
      local loaded, err = load_table(cfg)
      assert.is_nil(loaded)
      assert(err:find("sample.lua: " .. b[3], 1, true) or err:find(b[3], 1, true),
             "expected \"" .. b[3] .. "\" in: " .. err)
    end)
  end

  it("runs the file in the broker's closed sandbox", function()
    local cfg, err = policy.load_config("escape.lua", nil,
      "local s = getmetatable('').__index\nreturn { clusters = { dev = { topics = { s.dump and 'x' } } } }")
    assert.is_nil(cfg)
    assert.matches("escape.lua:1: attempt to index a boolean value", err) -- the metatable is hidden
    cfg, err = policy.load_config("loop.lua", nil, "while true do end")
    assert.is_nil(cfg)
    assert.matches("loop.lua:1: stopped: the file runs too long", err)
  end)
end)
