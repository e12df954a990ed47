#!/usr/bin/env bash
# Install what building and running KiteQ needs on Debian 12 (run as root).
#   scripts/install-deps.sh          # build + run dependencies
#   scripts/install-deps.sh --test   # also what the tests need (cmocka, busted, luajit,
#                                    # clang + its libFuzzer/sanitizer runtime for scripts/fuzz.sh)
set -euo pipefail
PKGS=(build-essential cmake pkg-config libuv1-dev libprotobuf-c-dev protobuf-c-compiler
      libluajit-5.1-dev libzookeeper-mt-dev libmariadb-dev libpcre2-dev libcjson-dev uthash-dev
      libhttp-parser-dev libssl-dev)
if [ "${1:-}" = "--test" ]; then
  PKGS+=(libcmocka-dev lua-busted luajit)
  # scripts/fuzz.sh: clang with libFuzzer (only recommended by clang-14, so named here)
  PKGS+=(clang libclang-rt-14-dev)
  # test_store_mysql starts a private MariaDB (mariadbd, mariadb-install-db, mariadb)
  PKGS+=(mariadb-server-core mariadb-client-core)
  # tests/chaos: network namespaces and veths (ip), packet loss (iptables' statistic match:
  # this kernel has no netem), the loop file system of the slow disk (losetup, mkfs.ext4)
  PKGS+=(iproute2 iptables util-linux e2fsprogs)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}"
fi
