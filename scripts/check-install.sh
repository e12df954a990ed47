#!/bin/sh
# ctest "install": `cmake --install` into a temporary DESTDIR and check that every file
# landed, that the installed config loads and names the installed policies' folder in its
# comment, and that a client program compiles against the installed header and library.
set -eu
build=${1:?usage: check-install.sh BUILD_DIR}
dest=$(mktemp -d /tmp/kiteq-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
DESTDIR=$dest cmake --install "$build" --prefix /usr/local >/dev/null
p=$dest/usr/local
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
"$p/bin/kiteq" --check "$p/etc/kiteq/cluster.lua" >/dev/null || { echo "installed config does not load"; fail=1; }
grep -q 'share/kiteq/policies' "$p/etc/kiteq/cluster.lua" || { echo "config does not mention share/kiteq/policies"; fail=1; }
grep -q '^ExecStart=/usr/local/bin/kiteq /usr/local/etc/kiteq/cluster.lua$' "$p/lib/systemd/system/kiteq.service" \
    || { echo "unit: bad ExecStart"; fail=1; }
# a client compiles and links against what was installed
cat > "$dest/c.c" <<'C'
#include <kiteq_cluster.h>
int main(void) { return 0; }
C
cc -I"$p/include" "$dest/c.c" -L"$p/lib" -lkiteq-client -o "$dest/c" || { echo "client does not build"; fail=1; }
[ $fail -eq 0 ] && echo "install OK: $p"
exit $fail
