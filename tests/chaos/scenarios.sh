# tests/chaos/scenarios.sh (sourced by tests/chaos/run): the faults. Each scenario runs in a
# subshell of its own (run_scenario): `fail` ends it, and its EXIT trap stops its processes.
# Waits are conditions with deadlines; the only sleeps are how long a fault is held ($HOLD)
# or the workload runs ($WARM).

fail() {
    echo "$SCEN FAILED: $*"
    exit 1
}

run_scenario() {
    SCEN=$1
    SCEN_DIR=$WORK/$1
    mkdir -p "$SCEN_DIR"
    : >"$SCEN_DIR/acked"
    : >"$SCEN_DIR/received"
    trap 'scenario_down' EXIT
    "scenario_${1//-/_}"
}

scenario_down() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    for p in "${CLEANUP[@]}"; do eval "$p" >/dev/null 2>&1 || true; done
}
CLEANUP=() # commands run when the scenario ends (loop devices, cgroups, mounts)

# The producer ran: stop it, wait until the consumer got every acked id (at most SECONDS), then
# print the scenario's line and fail on a loss or on more than MAX_COPIES deliveries of one id
# (0: not checked, where redeliveries are expected: acks lost or late on a lossy network).
finish() {
    local drain=$1 max_copies=$2 extra=${3:-}
    producer_stop
    wait_for "$drain" all_received
    stop_pid "$CONSUMER_PID" TERM
    local acked lost total uniq dup copies
    acked=$(acked_count)
    lost=$(lost_ids | wc -l)
    total=$(wc -l <"$SCEN_DIR/received")
    uniq=$(sort -u "$SCEN_DIR/received" | wc -l)
    dup=$((total - uniq))
    copies=$(sort "$SCEN_DIR/received" | uniq -c | sort -rn | awk 'NR == 1 { print $1 } END { if (!NR) print 0 }')
    echo "$SCEN acked=$acked lost=$lost dup=$dup max_copies=$copies$extra"
    grep '^produce:' "$SCEN_DIR/produce.err" | sed "s/^/  $SCEN /" # refusals and failures seen
    [ "$acked" -gt 0 ] || fail "no message was acked"
    [ "$lost" = 0 ] || fail "acked but never delivered: $(lost_ids | head -5 | tr '\n' ' ')"
    [ "$max_copies" = 0 ] || [ "$copies" -le "$max_copies" ] || fail "a message was delivered $copies times (at most $max_copies)"
}

# 1. broker <-> ZooKeeper partition longer than the session timeout (5 s): ZooKeeper drops the
# broker's ephemeral nodes; publishing and delivery go on; after healing the broker registers
# again. ZooKeeper's side is checked from the client namespace, which still reaches it.
scenario_zk_partition() {
    local alive="/kiteq/alive_servers/$(broker_addr b1)"
    broker_start b1 "file://$SCEN_DIR/b1-data?fsync=group" "zk://$ZK"
    zk_client zk-wait "$ZK" "$alive" present 15000 || fail "broker never registered"
    consumer_start "$(broker_addr b1)"
    producer_start "$(broker_addr b1)"
    wait_acked 20 20 || fail "no publish acked before the fault"
    sleep "$WARM"
    partition b1 "$(node_ip zk)"
    zk_client zk-wait "$ZK" "$alive" absent 30000 || fail "the broker's node did not expire"
    sleep "$HOLD"
    local before; before=$(acked_count)
    heal b1 "$(node_ip zk)"
    zk_client zk-wait "$ZK" "$alive" present 30000 || fail "the broker did not register again"
    zk_client zk-wait "$ZK" "/kiteq/server/trade/$(broker_addr b1)" present 5000 ||
        fail "the broker's topic node did not come back"
    wait_acked $((before + 20)) 20 || fail "no publish acked after healing"
    finish 30 1 " expired=yes reregistered=yes"
}

# 2. broker <-> MariaDB: 500 ms latency, then a partition longer than the store's timeout
# (3 s), for b1 only; b2 shares the database. b1 reaches MariaDB through the delaying relay in
# the router namespace. Publishes slow down or are refused (never acked without being stored);
# none acked is lost, none delivered more times than there are brokers.
scenario_mysql_faults() {
    mysql_init kqc_faults
    relay_start "$(router_ip b1)" "$MYSQL_HOST:$MYSQL_PORT" 500
    broker_start b1 "$(mysql_uri kqc_faults "$(router_ip b1):$RELAY_PORT")" "zk://$ZK"
    broker_start b2 "$(mysql_uri kqc_faults)" "zk://$ZK"
    consumer_start "$(broker_addr b1),$(broker_addr b2)"
    producer_start "$(broker_addr b1),$(broker_addr b2)" 4
    wait_acked 40 20 || fail "no publish acked before the fault"
    sleep "$WARM"
    kill -USR1 "$RELAY_PID" # 500 ms each way on b1's MySQL connections
    local before; before=$(acked_count)
    sleep $((HOLD + 3))
    local slowed=$(($(acked_count) - before))
    kill -USR1 "$RELAY_PID"
    partition b1 "$(router_ip b1)"
    sleep $((HOLD + 4))
    heal b1 "$(router_ip b1)"
    before=$(acked_count)
    wait_acked $((before + 40)) 30 || fail "no publish acked after healing"
    finish 60 2 " acked_during_latency=$slowed"
}

# 3. client <-> broker: 5 % of the client namespace's packets dropped both ways and 200 ms
# each way (the relay in the router namespace): heartbeats (1 s), ack timeouts (3 s) and
# reconnects hold; no acked message is lost.
scenario_client_loss() {
    broker_start b1 "file://$SCEN_DIR/b1-data?fsync=group"
    relay_start "$(router_ip cl)" "$(broker_addr b1)" 200
    local via="$(router_ip cl):$RELAY_PORT"
    consumer_start "$via"
    producer_start "$via" 4
    wait_acked 40 20 || fail "no publish acked before the fault"
    kill -USR1 "$RELAY_PID"
    loss_on cl 5
    local before; before=$(acked_count)
    sleep $((WARM + HOLD + 6))
    local during=$(($(acked_count) - before))
    [ "$during" -gt 0 ] || fail "nothing acked under loss and delay"
    loss_off cl
    kill -USR1 "$RELAY_PID"
    finish 60 0 " acked_under_fault=$during"
}

# 4. two brokers sharing MySQL, ZooKeeper registry; the consumer reads from b2 only, so what
# b1 acked waits in b1's rows. kill -9 of b1 under load: after its session expires (5 s) and
# takeoverSeconds (2 s) b2 takes its rows over and delivers them.
scenario_takeover_kill9() {
    mysql_init kqc_takeover
    broker_start b1 "$(mysql_uri kqc_takeover)" "zk://$ZK"
    broker_start b2 "$(mysql_uri kqc_takeover)" "zk://$ZK"
    consumer_start "$(broker_addr b2)"
    producer_start "$(broker_addr b1),$(broker_addr b2)" 4
    wait_acked 100 20 || fail "no publish acked before the fault"
    sleep "$WARM"
    stop_pid "${BROKER_PID[b1]}" KILL
    local before; before=$(acked_count)
    wait_acked $((before + 20)) 20 || fail "the survivor acked nothing after the kill"
    wait_for 40 broker_log_has b2 "server=$(broker_addr b1) taken over: moved=" ||
        fail "b2 did not take over b1"
    local moved; moved=$(grep -o "taken over: moved=[0-9]*" "$SCEN_DIR/b2.log" | head -1)
    finish 60 2 " ${moved/taken over: /}"
}

# The file store on a file system of its own, in a private mount namespace held by a `sleep`
# (the mount goes away with the last process in it, the broker included):
# disk_holder SIZE_MB [DEVICE] (tmpfs of SIZE_MB, or DEVICE). Sets HOLDER, DATA.
disk_holder() {
    DATA=$SCEN_DIR/b1-data
    mkdir -p "$DATA"
    local src="-t tmpfs -o size=$1m tmpfs"
    [ -n "${2:-}" ] && src=$2
    unshare -m --propagation private sh -c "mount $src '$DATA' && touch '$DATA/.mounted' && exec sleep 100000" &
    HOLDER=$!
    track $!
    wait_for 5 test -e "/proc/$HOLDER/root$DATA/.mounted" || fail "cannot mount the data file system"
}
in_holder() { nsenter --mount="/proc/$HOLDER/ns/mnt" -- "$@"; }
# broker b1 inside the holder's mount namespace and b1's network namespace
broker_launch_on_disk() {
    broker_launch b1 nsenter --mount="/proc/$HOLDER/ns/mnt" --net="/run/netns/$(ns b1)" --
}

# 5a. disk full: a 16 MiB tmpfs filled up but for 256 KiB while publishing: saves fail and
# publishes are refused with a reason (none acked unstored); space comes back; kill -9 and a
# restart on the same files: every acked message is still delivered.
scenario_disk_full() {
    disk_holder 16
    broker_config b1 "file://$DATA?fsync=group&segment_mb=1"
    broker_launch_on_disk
    consumer_start "$(broker_addr b1)"
    producer_start "$(broker_addr b1)" 2
    wait_acked 20 20 || fail "no publish acked before the fault"
    # the broker keeps writing (and preallocating segments) between df and fallocate: measure
    # again and retry when what was free is gone by then
    local free tries=0
    until free=$(in_holder df -k --output=avail "$DATA" | tail -1) &&
        in_holder fallocate -l $(((free - 256) * 1024)) "$DATA/filler" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 10 ] || fail "cannot fill the disk"
    done
    wait_for 20 grep -q "refused=[1-9]\|No space\|ENOSPC\|no space" "$SCEN_DIR/b1.log" ||
        fail "the broker never said the disk was full"
    sleep "$HOLD"
    in_holder rm -f "$DATA/filler"
    local before; before=$(acked_count)
    wait_acked $((before + 20)) 30 || fail "no publish acked after space came back"
    producer_stop
    stop_pid "${BROKER_PID[b1]}" KILL
    broker_launch_on_disk
    producer_start "$(broker_addr b1)" 1 # finish stops a producer
    finish 60 2 " full_errors=$(grep -ci 'no space\|ENOSPC' "$SCEN_DIR/b1.log")"
}

# 5b. disk slow: no dm-delay here (no device-mapper in this kernel); the stand-in is an ext4
# loop device whose writes the blkio cgroup throttles to 20 IOPS for the broker (every fsync
# waits), then lifts. Publishes slow down; none acked is lost.
scenario_disk_slow() {
    local cg=/sys/fs/cgroup/blkio
    if [ ! -w "$cg/cgroup.procs" ] || ! command -v losetup >/dev/null || ! command -v mkfs.ext4 >/dev/null; then
        echo "$SCEN SKIPPED: needs the blkio cgroup (v1) at $cg, losetup and mkfs.ext4"
        return 0
    fi
    truncate -s 64M "$SCEN_DIR/disk.img"
    mkfs.ext4 -q "$SCEN_DIR/disk.img" || fail "mkfs.ext4 failed"
    local loop; loop=$(losetup -f --show "$SCEN_DIR/disk.img") || {
        echo "$SCEN SKIPPED: no free loop device"; return 0; }
    CLEANUP+=("losetup -d $loop")
    local dev; dev=$(cat "/sys/block/$(basename "$loop")/dev")
    disk_holder 0 "$loop"
    broker_config b1 "file://$DATA?fsync=group&segment_mb=1"
    broker_launch_on_disk
    consumer_start "$(broker_addr b1)"
    producer_start "$(broker_addr b1)" 4
    wait_acked 40 20 || fail "no publish acked before the fault"
    sleep "$WARM"
    local group=$cg/kqchaos$$
    mkdir "$group" || fail "cannot make a blkio cgroup"
    CLEANUP=("echo ${BROKER_PID[b1]} > $cg/cgroup.procs; rmdir $group" "${CLEANUP[@]}")
    echo "$dev 20" >"$group/blkio.throttle.write_iops_device"
    echo "${BROKER_PID[b1]}" >"$group/cgroup.procs"
    local before t0=$SECONDS; before=$(acked_count)
    sleep $((HOLD + 3))
    local slow_rate=$((($(acked_count) - before) / (SECONDS - t0 + 1)))
    echo "${BROKER_PID[b1]}" >"$cg/cgroup.procs"
    echo "$dev 0" >"$group/blkio.throttle.write_iops_device"
    before=$(acked_count)
    wait_acked $((before + 40)) 20 || fail "no publish acked after the disk was fast again"
    finish 60 2 " acked_per_s_throttled=$slow_rate"
}
