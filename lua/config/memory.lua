-- KiteQ broker configuration with the in-memory store (nothing survives a restart):
-- `kiteq lua/config/memory.lua`. Otherwise the same as cluster.lua.
--
-- The file is plain Lua run in a sandbox (string, table and math only; no io/os/require)
-- with a short time limit, and it must end with `return { ... }`. Keys keep the original
-- Go broker's option names. Unknown keys, wrong types and bad values are errors, reported
-- as "FILE: clusters.dev.deliverySeconds: must be an integer >= 1 (got ...)".
-- Check a file without starting the broker: `kiteq --check lua/config/cluster.lua`.
-- Command-line flags (-bind, -pport, -db, -topics, -zkhost, -deliveryFirst, -logLevel,
-- -groups) override the values below; see `kiteq --help`.

return {
  -- Cluster section to run when --cluster / -clusterName is not given.
  -- May be left out when the file has exactly one cluster.
  default = "dev",

  -- Where subscriptions (bindings) come from:
  --   ""                            the static `bindings` below (default)
  --   "zk://host:2181[,host:2181]"  ZooKeeper, as the original (consumers publish bindings)
  -- A cluster may override it with its own `registry` key.
  registry = "",

  clusters = {
    dev = {
      env = "dev",                      -- free-form environment label (default "dev")
      bind = "127.0.0.1:13800",         -- listen address and broker id in the registry
                                        -- (default "127.0.0.1:13800"); must be reachable by clients
      topics = { "trade", "user-profile" },  -- topics this broker serves (at least one)

      -- Message store (default "file://./data"):
      --   "memory://"                     nothing survives a restart
      --   "file://DIR?fsync=group"        append-only log in DIR; acks after a group fsync
      --   "mysql://host:3306?db=kite&username=..."
      db = "memory://",

      deliverySeconds = 5,              -- wait this long for a consumer's ack per attempt (default 5)
      recoverSeconds = 10,              -- period of the retry/recovery scan, >= 1 (default 10)
      recievePermitsPerSecond = 20000,  -- intake limit in messages/s, original spelling (default 20000)
      deliveryFirst = false,            -- deliver before the store confirms (default false)
      heartbeatTimeoutSeconds = 90,     -- close connections silent this long (default 90)
      admin = "127.0.0.1:13801",        -- admin HTTP (/stat, /binds, /reload); "" or false = off (default off)
      policies = "lua/policies",        -- folder of routing/flow/retry Lua policies (default "lua/policies")
      logLevel = "info",                -- debug, info, warn or error (default "info")

      -- Groups allowed to connect: groupId = secretKey (sent in ConnMeta). Default: none.
      groups = {
        ["s-trade-a"] = "secret-a",     -- a consumer group
        ["p-trade"] = "secret-p",       -- a producer group
      },
    },
  },

  -- Static subscriptions, used when registry = "". One entry may list several groupIds
  -- (one binding per group). A cluster may also have its own `bindings` list. A binding
  -- whose topic belongs to another cluster of this file is ignored by this one; a topic
  -- that no cluster serves is an error.
  --   groupIds    consumer groups (required)
  --   topic       one of the cluster's topics (required)
  --   bindType    "direct" (exact messageType), "regx" (PCRE pattern, matched anywhere)
  --               or "fanout" (every message type; messageType is "*"). Also 0/1/2.
  --               Default "direct".
  --   messageType required for direct and regx
  --   watermark   delivery rate limit per group and topic in messages/s; <= 0 or absent
  --               means 6000
  --   persistent  keep messages while every consumer of the group is offline (default true)
  bindings = {
    { groupIds = { "s-trade-a" }, topic = "trade", messageType = "pay-succ",
      bindType = "direct", watermark = 1000, persistent = true },
    { groupIds = { "s-trade-a" }, topic = "trade", messageType = "refund-\\d+",
      bindType = "regx", watermark = 1000, persistent = true },
    { groupIds = { "s-trade-a" }, topic = "user-profile",
      bindType = "fanout", persistent = false },
  },
}
