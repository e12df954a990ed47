#!/usr/bin/env bash
# Set-up command 2: install test dependencies, build, run every test (C unit and
# integration tests through ctest, Lua specs through busted). Exit status 0 = all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-dirs.sh
scripts/install-deps.sh --test
scripts/build.sh -DKITEQ_WERROR=ON # a new compiler warning fails the run (docs/TESTING.md)
status=0
marker=$(mktemp /tmp/kiteq-test-run.XXXXXX) # the tests make their directories in /tmp
# Two at a time on CI's two cores: the tests mostly wait on brokers, and those that measure
# time or load run alone (RUN_SERIAL in CMakeLists.txt).
(cd build && ctest -j"$(nproc)" --output-on-failure --timeout 300) || status=1
busted --lua=luajit tests/lua || status=1
# The tests keep their temporary directories (broker logs, data) for a post-mortem; after a
# green run, remove the ones this run made.
if [ $status = 0 ]; then
    remove_test_dirs_since "$marker"
else
    echo "test.sh: failed; the tests' directories are kept in /tmp (kiteq-test-*, kq-*)" >&2
fi
rm -f "$marker"
exit $status
