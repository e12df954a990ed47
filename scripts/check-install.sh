#!/bin/sh
# ctest "install": `cmake --install` into a temporary prefix and check that every file landed,
# that the installed config passes `kiteq --check` with the installed policies (run from /,
# so nothing of the source tree helps), ships no sample secrets, that the unit names the
# prefix, and that a client program compiles against the installed header and library.
set -eu
build=${1:?usage: check-install.sh BUILD_DIR}
dest=$(mktemp -d /tmp/kiteq-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
p=$dest/usr/local
cmake --install "$build" --prefix "$p" >/dev/null
fail=0
for f in bin/kiteq bin/kiteq-cli lib/libkiteq-client.so include/kiteq_client.h \
         include/kiteq_cluster.h etc/kiteq/cluster.lua share/kiteq/policies/routing.lua \
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
# a client compiles and links against what was installed
cat > "$dest/c.c" <<'C'
#include <kiteq_cluster.h>
int main(void) { return 0; }
C
cc -I"$p/include" "$dest/c.c" -L"$p/lib" -lkiteq-client -o "$dest/c" || { echo "client does not build"; fail=1; }
[ $fail -eq 0 ] && echo "install OK: $p"
exit $fail
