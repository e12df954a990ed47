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
         lib/systemd/system/kiteq.service; do
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
# ... and run against the installed broker: consume.c receives what publish.c and
# two_phase.c (committed) send
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
        "$dest/two_phase" "127.0.0.1:$port" p-trade secret-p trade pay-succ >/dev/null \
            || { echo "examples/two_phase failed"; fail=1; }
        for _ in $(seq 100); do
            [ "$(grep -c 'trade/pay-succ' "$dest/consumed")" -ge 4 ] && break
            sleep 0.1
        done
        grep -q 'message 2$' "$dest/consumed" && grep -q 'order 42 paid$' "$dest/consumed" \
            || { cat "$dest/consumed"; echo "examples/consume did not get all 4 messages"; fail=1; }
        kill $cpid; wait $cpid 2>/dev/null || true
    fi
    kill $bpid; wait $bpid 2>/dev/null || true
fi
# What the installed programs wrote goes to this test's output, which ctest keeps
# (Testing/Temporary/LastTest.log): $dest is removed, and scripts/sanitize.sh looks there for
# sanitizer reports.
for f in check.out broker.log consumed; do
    [ -s "$dest/$f" ] && { echo "--- $f"; cat "$dest/$f"; }
done
[ $fail -eq 0 ] && echo "install OK: $p"
exit $fail
