# tests/chaos/net.sh (sourced by tests/chaos/run): the suite's private network.
#
# One network namespace per node (zk, db, b1, b2, cl) and a router namespace; node N has a
# veth pair to the router, 10.200.N.2/30 on its side and 10.200.N.1/30 on the router's, and a
# default route through the router. Everything is made inside namespaces named after this
# run's PID (nothing is added to the host's own network) and removed by net_down, which
# `run` calls from its EXIT trap. Faults are iptables rules inside a node's namespace
# (partitions, random loss) and tests/chaos's relay (delay: this kernel has no netem).

NS_PREFIX=kqc$$
ROUTER=${NS_PREFIX}r
NODES=(zk db b1 b2 cl)

ns() { echo "$NS_PREFIX$1"; }          # namespace of a node
node_ip() { echo "10.200.$(node_index "$1").2"; }
router_ip() { echo "10.200.$(node_index "$1").1"; } # the router's address on a node's link
node_index() {
    local i
    for i in "${!NODES[@]}"; do [ "${NODES[$i]}" = "$1" ] && { echo $((i + 1)); return; }; done
    echo "net.sh: unknown node $1" >&2
    return 1
}
# (in the foreground only: started with &, $! would be a subshell, not the program)
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

# What the kernel and the tools here can do; the reasons go to stdout, one per line.
net_missing() {
    [ "$(id -u)" = 0 ] || echo "not root (network namespaces need CAP_SYS_ADMIN)"
    command -v ip >/dev/null || echo "no ip (iproute2)"
    command -v iptables >/dev/null || echo "no iptables"
    local probe=${NS_PREFIX}probe
    if ip netns add "$probe" 2>/dev/null; then
        ip -n "$probe" link add kqv0 type veth peer name kqv1 2>/dev/null || echo "no veth in this kernel"
        ip netns exec "$probe" iptables -A OUTPUT -m statistic --mode random --probability 0.05 \
            -j DROP 2>/dev/null || echo "no iptables statistic match (random loss)"
        ip netns del "$probe"
    else
        echo "no network namespaces (ip netns add failed)"
    fi
}

# netem: the usual tool for delay and loss; reported when it is missing (we use stand-ins).
net_has_netem() {
    local probe=${NS_PREFIX}probe ok=1
    ip netns add "$probe" 2>/dev/null || return 1
    ip -n "$probe" link set lo up
    ip netns exec "$probe" tc qdisc add dev lo root netem delay 1ms 2>/dev/null && ok=0
    ip netns del "$probe"
    return $ok
}

# Namespaces of an earlier run that was killed before its trap ran (SIGKILL, e.g. a ctest
# timeout): named kqc<PID>... with that PID gone. Their processes are stopped by PID first.
net_sweep_stale() {
    local n pid p
    for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^kqc[0-9]+'); do
        pid=$(echo "$n" | sed -E 's/^kqc([0-9]+).*/\1/')
        [ -d "/proc/$pid" ] && continue
        for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$n" 2>/dev/null && echo "chaos: removed namespace $n of a killed run"
    done
}

net_up() {
    ip netns add "$ROUTER"
    ip -n "$ROUTER" link set lo up
    ip netns exec "$ROUTER" sysctl -qw net.ipv4.ip_forward=1
    local n i
    for n in "${NODES[@]}"; do
        i=$(node_index "$n")
        ip netns add "$(ns "$n")"
        ip -n "$(ns "$n")" link set lo up
        ip -n "$ROUTER" link add "r$n" type veth peer name eth0 netns "$(ns "$n")"
        ip -n "$ROUTER" addr add "10.200.$i.1/30" dev "r$n"
        ip -n "$ROUTER" link set "r$n" up
        ip -n "$(ns "$n")" addr add "10.200.$i.2/30" dev eth0
        ip -n "$(ns "$n")" link set eth0 up
        ip -n "$(ns "$n")" route add default via "10.200.$i.1"
    done
}

net_down() {
    local n
    for n in "${NODES[@]}" probe; do ip netns del "$(ns "$n")" 2>/dev/null || true; done
    ip netns del "$ROUTER" 2>/dev/null || true
}

# Drop every packet between node and ADDR (both ways, inside node's namespace): the peer
# sees silence, as in a real partition, not a refused connection.
partition() {
    in_ns "$1" iptables -I OUTPUT -d "$2" -j DROP
    in_ns "$1" iptables -I INPUT -s "$2" -j DROP
}
heal() {
    in_ns "$1" iptables -D OUTPUT -d "$2" -j DROP
    in_ns "$1" iptables -D INPUT -s "$2" -j DROP
}

# Random loss of PERCENT % of node's packets, both ways.
loss_on() {
    local p; p=$(awk -v p="$2" 'BEGIN { printf "%.3f", p / 100 }')
    in_ns "$1" iptables -I OUTPUT -m statistic --mode random --probability "$p" -j DROP
    in_ns "$1" iptables -I INPUT -m statistic --mode random --probability "$p" -j DROP
}
loss_off() { in_ns "$1" iptables -F OUTPUT; in_ns "$1" iptables -F INPUT; }
