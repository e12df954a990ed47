# tests/chaos/procs.sh (sourced by tests/chaos/run): the processes of the suite - ZooKeeper,
# MariaDB, brokers, the checked producer and consumer, relays - each started in its node's
# namespace and stopped by PID (procs_down, from run's EXIT trap, kills what is left).

PIDS=()            # every process started here, for procs_down
BROKER_PORT=13800  # private namespaces: fixed ports collide with nothing
RELAY_PORT=13900

track() { PIDS+=("$1"); }

# kill -9 and reap one of ours.
stop_pid() {
    local sig=${2:-KILL} i
    kill "-$sig" "$1" 2>/dev/null || true
    if [ "$sig" != KILL ]; then
        # a run must never hang on a process that does not stop: SIGKILL after 10 s, said so
        # (seen twice in CI: a producer told to stop right after it started kept publishing)
        for i in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$1" 2>/dev/null; then
            echo "chaos: pid $1 did not stop on SIG$sig within 10 s: killed" >&2
            kill -KILL "$1" 2>/dev/null || true
        fi
    fi
    wait "$1" 2>/dev/null || true
}

procs_down() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    PIDS=()
    [ -n "${SVC_BASE:-}" ] && "$SRC/scripts/services-down.sh" "$SVC_BASE" --purge >/dev/null 2>&1 || true
}

# until CMD succeeds, at most SECONDS (whole seconds); 1 at the deadline.
wait_for() {
    local end=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.1
    done
}

# ZooKeeper in zk's namespace, MariaDB in db's (scripts/services-up.sh on their veth address).
services_up() {
    SVC_BASE=$WORK/svc
    SERVICES_ADDR=$(node_ip zk) in_ns zk "$SRC/scripts/services-up.sh" "$SVC_BASE" zk >>"$WORK/services.log" 2>&1
    SERVICES_ADDR=$(node_ip db) in_ns db "$SRC/scripts/services-up.sh" "$SVC_BASE" mysql >>"$WORK/services.log" 2>&1
    . "$SVC_BASE/services.env"
    ZK="$ZK_HOSTS"
    zk_client zk-write "$ZK" "/kiteq/sub/trade/s-trade-a-bind" \
        '[{"groupId":"s-trade-a","topic":"trade","messageType":"pay-succ","bindType":0,"version":"1.0.0","watermark":100000,"persistent":true}]'
}

# The chaos client from the client namespace (ZooKeeper tools: any node reaches zk).
zk_client() { in_ns cl "$BUILD/kiteq-chaos-client" "$@"; }

# mysql_init DB: the MySQL store's schema (4 shards) in database DB.
mysql_init() {
    in_ns db "$BUILD/kiteq-cli" mysql init --host "$MYSQL_HOST:$MYSQL_PORT" --user "$MYSQL_USER" \
        --password "$MYSQL_PASSWORD" --db "$1" --shardnum 4 >/dev/null
}
mysql_uri() { # mysql_uri DB [HOST:PORT]: through a relay when given
    echo "mysql://${2:-$MYSQL_HOST:$MYSQL_PORT}?db=$1&username=$MYSQL_USER&password=$MYSQL_PASSWORD&shardnum=4&timeout=3"
}

# broker_config NODE DB_URI [REGISTRY]: NODE's broker config ($SCEN_DIR/NODE.lua), listening
# on NODE_IP:13800.
declare -A BROKER_PID BROKER_CFG
broker_config() {
    local node=$1 db=$2 registry=${3:-} cfg=$SCEN_DIR/$1.lua
    cat >"$cfg" <<CFG
return {
  default = "chaos",
  registry = "$registry",
  clusters = { chaos = {
    bind = "$(node_ip "$node"):$BROKER_PORT",
    topics = { "trade" }, db = "$db", policies = "$SRC/lua/policies",
    deliverySeconds = 1, recoverSeconds = 1, takeoverSeconds = 2,
    groups = { ["p-trade"] = "secret", ["s-trade-a"] = "secret" } } },
  bindings = { { groupIds = { "s-trade-a" }, topic = "trade", messageType = "pay-succ",
                 bindType = "direct", persistent = true } },
}
CFG
    BROKER_CFG[$node]=$cfg
}

# broker_launch NODE CMD...: start NODE's broker under CMD (a program that enters its
# namespaces and execs the broker: not a shell function, whose $! would be a subshell); sets
# BROKER_PID[NODE]; its log is $SCEN_DIR/NODE.log. Waits for "ready".
broker_launch() {
    local node=$1 log=$SCEN_DIR/$1.log; shift
    "$@" "$BUILD/kiteq" "${BROKER_CFG[$node]}" >>"$log" 2>&1 &
    BROKER_PID[$node]=$!
    track $!
    wait_for 20 grep -qs "ready port=" "$log" || { tail -20 "$log" >&2; fail "$node: broker not ready"; }
}

# broker_start NODE DB_URI [REGISTRY]: both, in NODE's network namespace.
broker_start() {
    broker_config "$@"
    broker_launch "$1" ip netns exec "$(ns "$1")"
}

broker_addr() { echo "$(node_ip "$1"):$BROKER_PORT"; }

# Lines of NODE's broker log matching a fixed string.
broker_log_has() { grep -qF -- "$2" "$SCEN_DIR/$1.log"; }

# relay_start LISTEN_IP TARGET DELAY_MS: the delaying relay in the router namespace on
# LISTEN_IP:13900 (the router's address on a node's link); sets RELAY_PID. It passes bytes on
# at once until SIGUSR1 switches the delay on (the next one switches it off).
relay_start() {
    ip netns exec "$ROUTER" "$BUILD/kiteq-chaos-client" relay "$1:$RELAY_PORT" "$2" "$3" \
        2>>"$SCEN_DIR/relay.log" &
    RELAY_PID=$!
    track $!
    wait_for 5 grep -qs "relay: $1:$RELAY_PORT" "$SCEN_DIR/relay.log" || fail "relay did not start"
}

# The checked workload, from the client namespace: producers append acked ids to
# $SCEN_DIR/acked, the consumer (group s-trade-a) what it receives to $SCEN_DIR/received.
consumer_start() { # BROKERS (comma-separated)
    ip netns exec "$(ns cl)" "$BUILD/kiteq-chaos-client" consume "$1" s-trade-a secret "$SCEN_DIR/received" \
        2>>"$SCEN_DIR/consume.err" &
    CONSUMER_PID=$!
    track $!
}
producer_start() { # BROKERS [THREADS]
    ip netns exec "$(ns cl)" "$BUILD/kiteq-chaos-client" produce "$1" p-trade secret trade pay-succ \
        "$SCEN_DIR/acked" "${2:-2}" 2>>"$SCEN_DIR/produce.err" &
    PRODUCER_PID=$!
    track $!
}
producer_stop() { stop_pid "$PRODUCER_PID" TERM; }
acked_count() { sort -u "$SCEN_DIR/acked" 2>/dev/null | wc -l; }
# Wait until the producers have N acked messages (at most SECONDS).
acked_at_least() { [ "$(acked_count)" -ge "$1" ]; }
wait_acked() { wait_for "$2" acked_at_least "$1"; }

lost_ids() { comm -23 <(sort -u "$SCEN_DIR/acked") <(sort -u "$SCEN_DIR/received" 2>/dev/null); }
all_received() { [ -z "$(lost_ids | head -1)" ]; }
