#!/usr/bin/env bash
# Set-up command 2: install test dependencies, build, run every test (C unit and
# integration tests through ctest, Lua specs through busted). Exit status 0 = all passed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --test
scripts/build.sh
status=0
(cd build && ctest --output-on-failure --timeout 300) || status=1
busted --lua=luajit tests/lua || status=1
exit $status
