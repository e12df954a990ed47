#!/bin/sh
# ctest "install": `cmake --install` into a temporary prefix and check that every file landed,
# that the installed config passes `kiteq --check` with the installed policies (run from /,
# so nothing of the source tree helps), ships no sample secrets, that the unit names the
# prefix, and that a client program compiles against the installed headers and library found
# through pkg-config; the library has a versioned SONAME and exports exactly its public API;
# the examples of docs/CLIENT.md build against it and run against the installed broker.
set -eu
build=${1:?usage: check-install.sh BUILD_DIR}
dest=$(mktemp -d /tmp/kiteq-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
p=$dest/usr/local
cmake --install "$build" --prefix "$p" >/dev/null
fail=0
for f in bin/kiteq bin/kiteq-cli lib/libkiteq-client.so lib/libkiteq-client.so.1 \
         lib/pkgconfig/kiteq-client.pc include/kiteq/kiteq_client.h \
         include/kiteq/kiteq_cluster.h etc/kiteq/cluster.lua share/kiteq/policies/routing.lua \
         share/kiteq/policies/flow.lua share/kiteq/policies/retry.lua \
         lib/systemd/system/kiteq.service lib/lua/5.1/kiteq/policy.so; do
    [ -e "$p/$f" ] || { echo "missing: $f"; fail=1; }
done
if [ -f "$(dirname "$0")/../src/tools/kiteq_bench.c" ]; then
    [ -x "$p/bin/kiteq-bench" ] || { echo "missing: bin/kiteq-bench"; fail=1; }
fi
[ -x "$p/bin/kiteq" ] || { echo "bin/kiteq not executable"; fail=1; }
cfg=$p/etc/kiteq/cluster.lua
grep -q "^ *policies = \"$p/share/kiteq/policies\"," "$cfg" \
    || { echo "config does not name the installed policies $p/share/kiteq/policies"; fail=1; }
if grep -E '^ *\["[^"]*"\] = "' "$cfg"; then echo "config ships sample secrets"; fail=1; fi
(cd / && "$p/bin/kiteq" --check "$cfg") >"$dest/check.out" 2>&1 \
    || { cat "$dest/check.out"; echo "installed config fails kiteq --check"; fail=1; }
grep -q "policy: loaded dir=$p/share/kiteq/policies hooks=route,retry,flow.intake,flow.group " \
    "$dest/check.out" || { cat "$dest/check.out"; echo "--check did not load the installed policies"; fail=1; }
# the kiteq.policy Lua module loads the installed policies (a sanitizer build's module needs
# its runtime loaded first: not in a plain luajit)
if [ -z "${KQ_SANITIZER_FLAGS:-}" ] && command -v luajit >/dev/null; then
    (cd / && luajit -e "package.cpath = '$p/lib/lua/5.1/?.so;' .. package.cpath
        local p = assert(require('kiteq.policy').load('$p/share/kiteq/policies'))
        assert(p:call('retry', { attempts = 3 }).delay_ms == 5000)") \
        || { echo "the installed kiteq.policy module does not load the installed policies"; fail=1; }
fi
grep -q "^ExecStartPre=$p/bin/kiteq --check $p/etc/kiteq/cluster.lua$" "$p/lib/systemd/system/kiteq.service" \
    || { echo "unit: bad ExecStartPre"; fail=1; }
grep -q "^ExecStart=$p/bin/kiteq $p/etc/kiteq/cluster.lua$" "$p/lib/systemd/system/kiteq.service" \
    || { echo "unit: bad ExecStart"; fail=1; }
# the library: SONAME with the ABI version, and exactly the public API exported
src=$(cd "$(dirname "$0")/.." && pwd)
readelf -d "$p/lib/libkiteq-client.so" | grep -q 'SONAME.*\[libkiteq-client\.so\.1\]' \
    || { echo "libkiteq-client.so: no SONAME libkiteq-client.so.1"; fail=1; }
nm -D --defined-only "$p/lib/libkiteq-client.so" | awk '$2 == "T" {sub(/@.*/, "", $3); print $3}' | sort >"$dest/exported"
sed -n 's/^ *\(kq_[a-z_]*;.*\)/\1/p' "$src/src/client/libkiteq-client.map" | tr ';' '\n' \
    | tr -d ' ' | grep . | sort >"$dest/public"
if ! cmp -s "$dest/exported" "$dest/public"; then
    echo "libkiteq-client.so exports other symbols than libkiteq-client.map:"
    diff "$dest/public" "$dest/exported" || true
    fail=1
fi
# a client compiles and links against what was installed, found through pkg-config
cat > "$dest/c.c" <<'C'
#include <kiteq/kiteq_cluster.h>
int main(void) { kq_client_log_to_stderr(KQ_CLIENT_LOG_WARN); return 0; }
C
flags=$(PKG_CONFIG_PATH=$p/lib/pkgconfig pkg-config --cflags --libs kiteq-client) \
    || { echo "pkg-config does not find kiteq-client"; fail=1; }
# a sanitizer build's library needs the sanitizer's runtime in the program too
flags="$flags ${KQ_SANITIZER_FLAGS:-}"
cc "$dest/c.c" $flags -o "$dest/c" || { echo "client does not build"; fail=1; }
LD_LIBRARY_PATH=$p/lib "$dest/c" || { echo "client does not run"; fail=1; }
# the examples of docs/CLIENT.md build against the installed library too
# (the only step that calls the library against a broker: a missing example fails it)
for ex in "$src"/examples/consume.c "$src"/examples/publish.c "$src"/examples/two_phase.c \
          "$src"/examples/*.c; do
    [ -e "$ex" ] || { echo "missing example: $ex"; fail=1; continue; }
    cc "$ex" $flags -o "$dest/$(basename "$ex" .c)" || { echo "example $ex does not build"; fail=1; }
done
# ... and run against the installed broker: consume.c receives what publish.c, two_phase.c
# (committed), pipelined.c and scheduled.c (not before its delay) send
if [ $fail -eq 0 ]; then
    cat >"$dest/examples.lua" <<CFG
return { default = "ex", clusters = { ex = {
  bind = "127.0.0.1:0", topics = { "trade" }, db = "memory://",
  policies = "$p/share/kiteq/policies",
  groups = { ["p-trade"] = "secret-p", ["s-trade-a"] = "secret-a" } } },
  bindings = { { groupIds = { "s-trade-a" }, topic = "trade", messageType = "pay-succ",
                 bindType = "direct" } } }
CFG
    "$p/bin/kiteq" "$dest/examples.lua" >"$dest/broker.log" 2>&1 &
    bpid=$!
    trap 'kill $bpid ${cpid:-} 2>/dev/null || true; rm -rf "$dest"' EXIT
    port=
    for _ in $(seq 100); do
        port=$(sed -n 's/.*ready port=\([0-9]*\).*/\1/p' "$dest/broker.log")
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        cat "$dest/broker.log"; echo "installed broker did not start"; fail=1
    else
        export LD_LIBRARY_PATH=$p/lib
        "$dest/consume" "127.0.0.1:$port" s-trade-a secret-a >"$dest/consumed" 2>&1 &
        cpid=$!
        "$dest/publish" "127.0.0.1:$port" p-trade secret-p trade pay-succ 3 >/dev/null \
            || { echo "examples/publish failed"; fail=1; }
        "$dest/scheduled" "127.0.0.1:$port" p-trade secret-p trade pay-succ 1500 >/dev/null \
            || { echo "examples/scheduled failed"; fail=1; }
        "$dest/two_phase" "127.0.0.1:$port" p-trade secret-p trade pay-succ >/dev/null \
            || { echo "examples/two_phase failed"; fail=1; }
        "$dest/pipelined" "127.0.0.1:$port" p-trade secret-p trade pay-succ 5 >/dev/null \
            || { echo "examples/pipelined failed"; fail=1; }
        for _ in $(seq 100); do
            [ "$(grep -c 'trade/pay-succ' "$dest/consumed")" -ge 10 ] && break
            sleep 0.1
        done
        grep -q 'message 2$' "$dest/consumed" && grep -q 'order 42 paid$' "$dest/consumed" \
            && grep -q 'pipelined 4$' "$dest/consumed" \
            && grep -q 'scheduled reminder$' "$dest/consumed" \
            || { cat "$dest/consumed"; echo "examples/consume did not get all 10 messages"; fail=1; }
        kill $cpid; wait $cpid 2>/dev/null || true
    fi
    kill $bpid; wait $bpid 2>/dev/null || true
fi
# zk_discovery.c against a broker registered in ZooKeeper: $ZK_HOSTS when set (as the tests
# use it), else a private one from scripts/services-up.sh (installs ZooKeeper if missing)
if [ $fail -eq 0 ] && [ -x "$dest/zk_discovery" ]; then
    zk=${ZK_HOSTS:-}
    if [ -z "$zk" ]; then
        zkbase=$(mktemp -d /tmp/kqzk-install-XXXXXX)
        trap 'kill ${bpid:-} ${cpid:-} ${zpid:-} 2>/dev/null || true; "$src/scripts/services-down.sh" "$zkbase" zk --purge >/dev/null 2>&1 || true; rm -rf "$dest" "$zkbase"' EXIT
        if "$src/scripts/services-up.sh" "$zkbase" zk >"$dest/zk.out" 2>&1; then
            zk=$(sed -n 's/^ZK_HOSTS=//p' "$zkbase/services.env")
        fi
    fi
    if [ -z "$zk" ]; then
        cat "$dest/zk.out"
        echo "install: SKIP examples/zk_discovery: ZooKeeper is not up (services-up.sh failed)"
        if [ -n "${CI:-}" ]; then echo "install: ZooKeeper is required in CI"; fail=1; fi
    else
        cat >"$dest/zk.lua" <<CFG
return { default = "zk", registry = "zk://$zk", clusters = { zk = {
  bind = "127.0.0.1:0", topics = { "install-zk" }, db = "memory://",
  policies = "$p/share/kiteq/policies",
  groups = { ["p-trade"] = "secret-p", ["s-trade-a"] = "secret-a" } } } }
CFG
        "$p/bin/kiteq" "$dest/zk.lua" >"$dest/zk-broker.log" 2>&1 &
        zpid=$!
        for _ in $(seq 150); do
            grep -q 'ready port=' "$dest/zk-broker.log" && break
            sleep 0.1
        done
        LD_LIBRARY_PATH=$p/lib "$dest/zk_discovery" "zk://$zk" p-trade secret-p s-trade-a \
            secret-a install-zk pay-succ >"$dest/zk-discovery.out" 2>&1 \
            || { cat "$dest/zk-discovery.out"; echo "examples/zk_discovery failed"; fail=1; }
        kill $zpid; wait $zpid 2>/dev/null || true
    fi
fi
# What the installed programs wrote goes to this test's output, which ctest keeps
# (Testing/Temporary/LastTest.log): $dest is removed, and scripts/sanitize.sh looks there for
# sanitizer reports.
for f in check.out broker.log consumed zk-broker.log zk-discovery.out; do
    [ -s "$dest/$f" ] && { echo "--- $f"; cat "$dest/$f"; }
done
[ $fail -eq 0 ] && echo "install OK: $p"
exit $fail
