-- Structure checks for every shipped config file (lua/config/*.lua and examples/*.lua).
-- Run from the repository root: busted --lua=luajit tests/lua
-- The C loader (src/config/config_lua.c) is the authority; this spec repeats its main rules
-- so that a broken shipped file fails here too, and checks the checker on broken samples.

local TOP_KEYS = { default = true, registry = true, clusters = true, bindings = true }
local INT_RANGES = {
  deliverySeconds = { 1 }, maxDeliverWorkers = { 1 }, recoverSeconds = { 1 },
  recievePermitsPerSecond = { 1 }, dlqExecHour = { 0, 23 }, heartbeatTimeoutSeconds = { 1 },
  txCheckSeconds = { 1 }, txMaxChecks = { 1, 1000 }, deliverWindow = { 1 },
  takeoverSeconds = { 1 }, maxConnections = { 0 }, messageHistory = { 0, 1000000 },
}
local CLUSTER_KEYS = {
  env = "string", registry = "string", bind = "string", topics = "table", db = "string",
  deliveryFirst = "boolean", admin = "any", adminToken = "any", policies = "string",
  logLevel = "string", logFile = "any",
  groups = "table", bindings = "table",
}
for k in pairs(INT_RANGES) do CLUSTER_KEYS[k] = "number" end
local BINDING_KEYS = { groupIds = true, topic = true, messageType = true, bindType = true,
                       watermark = true, persistent = true }
local BIND_TYPES = { direct = true, regx = true, fanout = true }
local LOG_LEVELS = { debug = true, info = true, warn = true, error = true }

-- Runs a config file the way the broker does: text only, no io/os/require.
local function load_config(path)
  local f = assert(io.open(path, "rb"))
  local src = f:read("*a")
  f:close()
  assert(src:byte(1) ~= 27, path .. ": bytecode is refused by the broker")
  local chunk = assert(loadstring(src, "@" .. path))
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    rawequal = rawequal, rawget = rawget, rawset = rawset, select = select,
    setmetatable = setmetatable, getmetatable = getmetatable, tonumber = tonumber,
    tostring = tostring, type = type, unpack = unpack,
    string = string, table = table, math = math,
  }
  setfenv(chunk, env)
  return chunk()
end

local function is_list(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return false end
    n = n + 1
  end
  return n == #t
end

local function is_name(s)
  return type(s) == "string" and #s > 0 and #s <= 255 and not s:find("[%s%c/,:]")
end

local function is_hostport(s)
  if type(s) ~= "string" then return false end
  local host, port = s:match("^(.+):(%d+)$")
  port = tonumber(port)
  return host ~= nil and port ~= nil and port >= 1 and port <= 65535
end

local function is_registry(s)
  if s == "" then return true end
  if type(s) ~= "string" or s:sub(1, 5) ~= "zk://" then return false end
  for hp in (s:sub(6):match("^[^?]*") .. ","):gmatch("([^,]*),") do
    if not is_hostport(hp) then return false end
  end
  return true
end

local function bind_type(v)
  if type(v) == "string" and BIND_TYPES[v:lower()] then return v:lower() end
  if v == nil then return "direct" end
  local names = { [0] = "direct", "regx", "fanout" }
  return names[v]
end

-- Returns a list of problems ({} when the config is fine).
local function problems(cfg)
  local out = {}
  local function bad(key, why) out[#out + 1] = key .. ": " .. why end

  if type(cfg) ~= "table" then
    bad("file", "must return a table")
    return out
  end
  for k in pairs(cfg) do
    if not TOP_KEYS[k] then bad(tostring(k), "unknown key") end
  end
  if cfg.registry ~= nil and not is_registry(cfg.registry) then bad("registry", "bad registry") end
  if type(cfg.clusters) ~= "table" or next(cfg.clusters) == nil then
    bad("clusters", "must define at least one cluster")
    return out
  end

  local all_topics, count = {}, 0
  for name, c in pairs(cfg.clusters) do
    count = count + 1
    local key = "clusters." .. tostring(name)
    if type(name) ~= "string" or type(c) ~= "table" then
      bad(key, "must be name = { ... }")
    else
      for k, v in pairs(c) do
        local want = CLUSTER_KEYS[k]
        if not want then
          bad(key .. "." .. tostring(k), "unknown key")
        elseif want ~= "any" and type(v) ~= want then
          bad(key .. "." .. k, "must be a " .. want)
        end
      end
      for k, range in pairs(INT_RANGES) do
        local v = c[k]
        if v ~= nil and (type(v) ~= "number" or v % 1 ~= 0 or v < range[1]
                         or (range[2] and v > range[2])) then
          bad(key .. "." .. k, "out of range")
        end
      end
      if not is_list(c.topics) or #c.topics == 0 then
        bad(key .. ".topics", "must be a non-empty list")
      else
        local seen = {}
        for i, t in ipairs(c.topics) do
          if not is_name(t) then bad(key .. ".topics[" .. i .. "]", "must be a topic name") end
          if seen[t] then bad(key .. ".topics[" .. i .. "]", "duplicate topic") end
          seen[t] = true
          all_topics[t] = true
        end
      end
      if c.bind ~= nil and not is_hostport(c.bind) then bad(key .. ".bind", "must be host:port") end
      local admin_on = c.admin ~= nil and c.admin ~= false and c.admin ~= ""
      if admin_on and not is_hostport(c.admin) then
        bad(key .. ".admin", "must be host:port, \"\" or false")
      end
      local token = c.adminToken
      if token ~= nil and token ~= false and token ~= "" and not (type(token) == "string"
          and #token >= 16 and #token <= 256 and token:match("^[\33-\126]+$")) then
        bad(key .. ".adminToken", "must be 16-256 visible ASCII characters")
      end
      local loopback = type(c.admin) == "string" and (c.admin:match("^localhost:")
        or c.admin:match("^127%.") or c.admin:match("^%[::1%]:"))
      if admin_on and not loopback and (token == nil or token == false or token == "") then
        bad(key .. ".adminToken", "required when admin listens beyond loopback")
      end
      if c.registry ~= nil and not is_registry(c.registry) then bad(key .. ".registry", "bad registry") end
      if c.logLevel ~= nil and not LOG_LEVELS[c.logLevel] then bad(key .. ".logLevel", "bad level") end
      if c.logFile ~= nil and c.logFile ~= false and type(c.logFile) ~= "string" then
        bad(key .. ".logFile", "must be a path, \"\" or false")
      end
      if c.db ~= nil and not (type(c.db) == "string" and (c.db:match("^memory://")
          or c.db:match("^file://[^?]") or c.db:match("^mysql://"))) then
        bad(key .. ".db", "must be a store URI")
      end
      if type(c.groups) == "table" then
        for g, secret in pairs(c.groups) do
          if not is_name(g) then bad(key .. ".groups", "bad group id " .. tostring(g)) end
          if type(secret) ~= "string" or secret == "" then
            bad(key .. ".groups." .. tostring(g), "secret must be a non-empty string")
          end
        end
      end
    end
  end
  if cfg.default ~= nil then
    if type(cfg.clusters[cfg.default]) ~= "table" then bad("default", "names no cluster") end
  elseif count ~= 1 then
    bad("default", "required when there are several clusters")
  end

  -- The groups a binding of `topic` may name (nil = any: no groups configured there).
  local function groups_of(clusters_of_binding, topic)
    local allowed
    for _, c in pairs(clusters_of_binding) do
      local serves = false
      for _, t in ipairs(type(c.topics) == "table" and c.topics or {}) do
        serves = serves or t == topic
      end
      if serves and type(c.groups) == "table" and next(c.groups) ~= nil then
        allowed = allowed or {}
        for g in pairs(c.groups) do allowed[g] = true end
      end
    end
    return allowed
  end

  local function check_bindings(list, key, topics, clusters_of_binding)
    if not is_list(list) then
      bad(key, "must be a list")
      return
    end
    for i, b in ipairs(list) do
      local bkey = key .. "[" .. i .. "]"
      if type(b) ~= "table" then
        bad(bkey, "must be a table")
      else
        for k in pairs(b) do
          if not BINDING_KEYS[k] then bad(bkey .. "." .. tostring(k), "unknown key") end
        end
        if not is_list(b.groupIds) or #b.groupIds == 0 then
          bad(bkey .. ".groupIds", "must be a non-empty list")
        else
          local seen, allowed = {}, groups_of(clusters_of_binding, b.topic)
          for j, g in ipairs(b.groupIds) do
            local gkey = bkey .. ".groupIds[" .. j .. "]"
            if not is_name(g) then bad(gkey, "bad group id") end
            if seen[g] then bad(gkey, "group listed twice") end
            if allowed and not allowed[g] then bad(gkey, "group not in groups: cannot log in") end
            seen[g] = true
          end
        end
        if not (is_name(b.topic) and topics[b.topic]) then
          bad(bkey .. ".topic", "not a configured topic: " .. tostring(b.topic))
        end
        local bt = bind_type(b.bindType)
        if not bt then bad(bkey .. ".bindType", "must be direct, regx or fanout (0-2)") end
        if bt ~= "fanout" and (type(b.messageType) ~= "string" or b.messageType == "") then
          bad(bkey .. ".messageType", "required for direct and regx")
        end
        if bt == "fanout" and b.messageType ~= nil and b.messageType ~= "*" then
          bad(bkey .. ".messageType", "ignored by a fanout binding (the broker warns)")
        end
        if b.watermark ~= nil and (type(b.watermark) ~= "number" or b.watermark % 1 ~= 0) then
          bad(bkey .. ".watermark", "must be an integer")
        end
        if b.persistent ~= nil and type(b.persistent) ~= "boolean" then
          bad(bkey .. ".persistent", "must be a boolean")
        end
      end
    end
  end
  if cfg.bindings ~= nil then
    check_bindings(cfg.bindings, "bindings", all_topics, cfg.clusters)
  end
  for name, c in pairs(cfg.clusters) do
    if type(c) == "table" and c.bindings ~= nil and is_list(c.topics) then
      local own = {}
      for _, t in ipairs(c.topics) do own[t] = true end
      check_bindings(c.bindings, "clusters." .. tostring(name) .. ".bindings", own, { c })
    end
  end
  return out
end

local function config_files()
  local files = {}
  local p = io.popen("ls lua/config/*.lua lua/config/examples/*.lua 2>/dev/null")
  for line in p:lines() do files[#files + 1] = line end
  p:close()
  return files
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
    it(path .. " loads in the sandbox and is well-formed", function()
      local cfg = load_config(path)
      assert.are.same({}, problems(cfg))
    end)
  end

  it("cluster.lua is the documented default", function()
    local cfg = load_config("lua/config/cluster.lua")
    local dev = cfg.clusters[cfg.default]
    assert.are.equal("dev", cfg.default)
    assert.are.equal("127.0.0.1:13800", dev.bind)
    assert.are.equal("file://./data?fsync=group", dev.db)
    assert.are.same({ "trade", "user-profile" }, dev.topics)
    local types = {}
    for _, b in ipairs(cfg.bindings) do types[bind_type(b.bindType)] = true end
    assert.are.same({ direct = true, regx = true, fanout = true }, types)
    local n = 0
    for _ in pairs(dev.groups) do n = n + 1 end
    assert.is_true(n >= 2)
  end)

  it("memory.lua uses the memory store", function()
    local cfg = load_config("lua/config/memory.lua")
    assert.are.equal("memory://", cfg.clusters[cfg.default].db)
  end)
end)

describe("the structure checker", function()
  -- a fresh, valid config for each case
  local function good()
    return {
      default = "dev",
      clusters = { dev = { topics = { "trade" }, bind = "127.0.0.1:13800",
                           groups = { g = "s" } } },
      bindings = { { groupIds = { "g" }, topic = "trade", messageType = "m" } },
    }
  end
  local breakers = {
    ["unknown top-level key"] = function(c) c.extra = 1 end,
    ["unknown cluster key"] = function(c) c.clusters.dev.delivrySeconds = 5 end,
    ["no clusters"] = function(c) c.clusters = {} end,
    ["default names no cluster"] = function(c) c.default = "nope" end,
    ["topics not strings"] = function(c) c.clusters.dev.topics = { 1 } end,
    ["duplicate topic"] = function(c) c.clusters.dev.topics = { "a", "a" } end,
    ["bad port"] = function(c) c.clusters.dev.bind = "127.0.0.1:70000" end,
    ["recoverSeconds 0"] = function(c) c.clusters.dev.recoverSeconds = 0 end,
    ["dlqExecHour 24"] = function(c) c.clusters.dev.dlqExecHour = 24 end,
    ["binding to an unknown topic"] = function(c) c.bindings[1].topic = "nope" end,
    ["bad bindType"] = function(c) c.bindings[1].bindType = "topic" end,
    ["bindType 3"] = function(c) c.bindings[1].bindType = 3 end,
    ["empty group id"] = function(c) c.bindings[1].groupIds = { "" } end,
    ["direct without messageType"] = function(c) c.bindings[1].messageType = nil end,
    ["empty secret"] = function(c) c.clusters.dev.groups = { g = "" } end,
    ["bad registry"] = function(c) c.registry = "etcd://x" end,
    ["a group twice in groupIds"] = function(c) c.bindings[1].groupIds = { "g", "g" } end,
    ["a bound group not in groups"] = function(c) c.bindings[1].groupIds = { "ghost" } end,
    ["a fanout binding with a messageType"] = function(c)
      c.bindings[1].bindType = "fanout"
    end,
    ["admin beyond loopback without adminToken"] = function(c)
      c.clusters.dev.admin = "0.0.0.0:13801"
    end,
    ["short adminToken"] = function(c) c.clusters.dev.adminToken = "short" end,
  }

  it("accepts the valid sample", function()
    assert.are.same({}, problems(good()))
  end)
  it("accepts any bound group when no groups are configured", function()
    local cfg = good()
    cfg.clusters.dev.groups = nil
    cfg.bindings[1].groupIds = { "anyone" }
    assert.are.same({}, problems(cfg))
  end)
  for name, breaker in pairs(breakers) do
    it("rejects: " .. name, function()
      local cfg = good()
      breaker(cfg)
      assert.is_true(#problems(cfg) > 0)
    end)
  end
end)
