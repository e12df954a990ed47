-- Two clusters that find their subscriptions in ZooKeeper, as the original Go broker did.
-- Consumers publish their bindings under /kiteq/sub/<topic>/<groupId>-bind; the file has
-- no `bindings`. Run one of them with: kiteq lua/config/examples/zookeeper.lua --cluster pre
-- Shared settings are ordinary Lua: a table merged into each cluster.

local common = {
  topics = { "trade", "user-profile", "relation" },
  deliverySeconds = 5,
  recoverSeconds = 10,
  recievePermitsPerSecond = 20000,
  heartbeatTimeoutSeconds = 90,
  groups = {
    ["s-trade-a"] = "secret-a",
    ["s-user-profile"] = "secret-u",
    ["p-trade"] = "secret-p",
  },
}

local function cluster(own)
  local c = {}
  for k, v in pairs(common) do c[k] = v end
  for k, v in pairs(own) do c[k] = v end
  return c
end

return {
  default = "online",
  registry = "zk://10.0.0.11:2181,10.0.0.12:2181,10.0.0.13:2181",
  clusters = {
    online = cluster {
      env = "online",
      bind = "10.0.1.20:13800",   -- the address clients reach: it is the broker's id in ZooKeeper
      admin = "10.0.1.20:13801",  -- a management network: beyond loopback, so adminToken is
                                  -- required (POST /dlq/*, /reload send it as a Bearer token)
      adminToken = "change-me-to-32-random-chars",  -- e.g. head -c 24 /dev/urandom | base64
      db = "mysql://10.0.2.5:3306?db=kite&username=kite&password=kite&maxConn=20",
    },
    pre = cluster {
      env = "pre",
      bind = "10.0.1.30:13800",
      registry = "zk://10.0.0.21:2181",  -- a cluster may use its own ZooKeeper
      db = "file://./data-pre?fsync=group",
      logLevel = "debug",
    },
  },
}
