#!/usr/bin/env bash
# Set-up command 1: install dependencies, build, start the broker on the embedded default
# (file store in ./data, no ZooKeeper, no MySQL). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec build/kiteq lua/config/cluster.lua
