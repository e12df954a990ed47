-- KiteQ broker configuration (read by `kiteq lua/config/cluster.lua`).
--
-- The file is plain Lua run in a sandbox (string, table and math only; no io/os/require)
-- with a short time limit, and it must end with `return { ... }`. Keys keep the original
-- Go broker's option names. Unknown keys, wrong types and bad values are errors, reported
-- as "FILE: clusters.dev.deliverySeconds: must be an integer >= 1 (got ...)".
-- Check a file without starting the broker: `kiteq --check lua/config/cluster.lua`.
-- Command-line flags (-bind, -pport, -db, -topics, -zkhost, -deliveryFirst, -logLevel,
-- -logFile, -groups) override the values below; see `kiteq --help`.

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
      db = "file://./data?fsync=group",

      deliverySeconds = 5,              -- wait this long for a consumer's ack per attempt (default 5)
      recoverSeconds = 10,              -- period of the retry/recovery scan, >= 1 (default 10)
      recievePermitsPerSecond = 20000,  -- intake limit in messages/s, original spelling (default
                                        -- 20000), shared fairly between publishing connections
      deliveryFirst = false,            -- deliver before the store confirms (default false)
      heartbeatTimeoutSeconds = 90,     -- close connections silent this long (default 90); one
                                        -- whose peer acknowledges nothing for half of it (a
                                        -- dead host or link) is closed then by the kernel
      maxConnections = 0,               -- client connections at once; past it a new one is
                                        -- closed at once (warned). 0 = what `ulimit -n` leaves
                                        -- after keeping a quarter of it (at least 64) for the
                                        -- store's files, the log and the admin; a larger value
                                        -- is lowered to that (default 0). Connections that do
                                        -- not authenticate within 5 s are closed.
      txCheckSeconds = 5,               -- first check of an uncommitted (two-phase) message after
                                        -- this; then doubling up to 60 s (default 5)
      txMaxChecks = 10,                 -- unanswered checks before it is dead-lettered (default 10)
      deliverWindow = 1000,             -- deliveries in flight per consumer group (default 1000)
      takeoverSeconds = 30,             -- mysql store + zk registry: when a broker sharing the
                                        -- database has been gone from /kiteq/alive_servers this
                                        -- long, one survivor takes over and delivers its pending
                                        -- messages (default 30). A broker's rows carry its
                                        -- kite_server = its bind "host:port" (mysql URI
                                        -- parameter server=..., the default): keep it stable
                                        -- and unique per broker
      messageHistory = 10000,           -- finished messages whose event history `kiteq-cli msg ID`
                                        -- still shows (at most ~450 bytes each); 0 = no
                                        -- histories at all, pending ones included (each pending
                                        -- message's costs ~100-300 bytes, docs/ADMIN.md); a
                                        -- change needs a restart (default 10000)
      admin = "127.0.0.1:13801",        -- admin HTTP (/stat, /binds, /reload); "" or false = off (default off)
      -- adminToken = "16-256 visible ASCII characters", -- the secret every mutating admin
                                        -- request (POST /dlq/requeue, /dlq/purge, /reload) must
                                        -- send as "Authorization: Bearer <adminToken>"; REQUIRED
                                        -- when admin listens beyond loopback (the broker refuses
                                        -- to start without it); enforced on loopback too when
                                        -- set; a reload takes a new one (default none)
      -- Folder of the routing/flow/retry Lua policies, relative to the working directory
      -- (default "lua/policies"; when that default is missing the built-in rules answer, with a
      -- warning). A folder named here must exist. The copy of this file that `cmake --install`
      -- writes names the installed folder, PREFIX/share/kiteq/policies.
      policies = "lua/policies",
      logLevel = "info",                -- debug, info, warn or error (default "info")
      -- logFile = "/var/log/kiteq/kiteq.log", -- append the log here (SIGUSR1 reopens it, for
                                        -- logrotate); relative to the working directory;
                                        -- "" or false = stderr (default); fixed at start
                                        -- (a SIGHUP reload does not move the log)

      -- Groups allowed to connect: groupId = secretKey (sent in ConnMeta). Default: none, and
      -- then any groupId is accepted (authentication off, logged at start). When groups are
      -- listed, a binding of a group that is not listed is an error (it could never log in).
      -- The copy of this file that `cmake --install` writes has these samples commented out:
      -- add your own groups there.
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
