#!/usr/bin/env bash
# Start a private ZooKeeper and/or MariaDB on 127.0.0.1 (free ports) for integration tests.
#
#   scripts/services-up.sh BASE [zk] [mysql]     # default: both
#   . BASE/services.env                          # ZK_HOSTS, ZK_PID, MYSQL_HOST/PORT/USER/PASSWORD/SOCKET/DB/PID
#   scripts/services-down.sh BASE [zk] [mysql] [--purge]
#
# Restarting just ZooKeeper (same port and data dir, e.g. a test that kills it):
#   scripts/services-down.sh BASE zk && scripts/services-up.sh BASE zk
# A second `up` of a service reuses the port and data dir recorded in BASE, and refuses to
# start when that service is still running.
#
# Installs only what is missing (Debian 12): libzookeeper-java, a headless JRE, slf4j-simple;
# mariadb-server-core + mariadb-client-core. No systemd needed; both run in the background with
# their output in BASE/*/log, stopped by PID (services-down.sh). BASE must be shorter than 80
# chars because the MariaDB unix socket lives in it.
set -euo pipefail

die() { echo "services-up: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 BASE [zk] [mysql]"
BASE=$1; shift
mkdir -p "$BASE"
BASE=$(cd "$BASE" && pwd)
[ ${#BASE} -lt 80 ] || die "BASE too long (${#BASE} chars, unix socket limit): $BASE"

WANT_ZK=0; WANT_MY=0
[ $# -eq 0 ] && { WANT_ZK=1; WANT_MY=1; }
for a in "$@"; do
  case "$a" in
    zk) WANT_ZK=1 ;;
    mysql|mariadb) WANT_MY=1 ;;
    *) die "unknown service '$a' (zk, mysql)" ;;
  esac
done

# The mariadb client honours MYSQL_HOST, MYSQL_TCP_PORT, MYSQL_UNIX_PORT and MYSQL_PWD even
# with --no-defaults. A caller that has loaded BASE/services.env into its environment (the
# tests do, then restart MariaDB through this script) would send our root-over-socket probes
# to 127.0.0.1:3306 over TCP, and MariaDB would "never become ready". Every client call below
# names host, port or socket explicitly, so drop them.
unset MYSQL_HOST MYSQL_TCP_PORT MYSQL_UNIX_PORT MYSQL_PWD MYSQL_HISTFILE MYSQL_PS1 \
      MARIADB_HOST MARIADB_TCP_PORT MARIADB_UNIX_PORT MARIADB_PWD

# The address both listen on: 127.0.0.1 unless SERVICES_ADDR names another local one (the
# chaos suite runs them in network namespaces, on the namespace's veth address).
ADDR=${SERVICES_ADDR:-127.0.0.1}

ZK_DEADLINE=${ZK_DEADLINE:-30}     # seconds until ZooKeeper must serve
MY_DEADLINE=${MY_DEADLINE:-60}     # seconds until MariaDB must answer

# ---- packages ---------------------------------------------------------------------------------
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

install_missing() {
  local missing=() p
  for p in "$@"; do have_pkg "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "services-up: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # No init system: make sure no postinst tries to start a daemon (removed again afterwards).
  local rc_made=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && rc_made=1
  fi
  local st=0
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
  } || st=$?
  [ $rc_made -eq 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $st -eq 0 ] || die "apt-get install failed (${missing[*]})"
}

# ---- helpers ----------------------------------------------------------------------------------
# A port is taken if any IPv4/IPv6 socket (any state) uses it locally.
port_in_use() {
  local hex; hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h=":$hex" '$2 ~ h"$" {f=1} END {exit !f}'
}

# Listening on it (restart on the same port: TIME_WAIT leftovers of our own probes don't count,
# both servers bind with SO_REUSEADDR).
port_listening() {
  local hex; hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h=":$hex" '$2 ~ h"$" && $4 == "0A" {f=1} END {exit !f}'
}

# Below the kernel's ephemeral range: no connection of a test running beside us takes the port
# as its local port, between our pick and the bind or while a test restarts a service on it.
free_port() {
  local p i low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 20000 ] 2>/dev/null || low=32768
  for i in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % (low - 20000) ))
    port_in_use "$p" || { echo "$p"; return 0; }
  done
  die "no free port found"
}

# Alive = exists and is not a zombie (kill -0 succeeds on zombies).
pid_alive() {
  local st
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
  st=$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)
  [ "$st" != Z ] && [ "$st" != X ]
}

# Our process = alive and started with BASE in its command line (guards against PID reuse).
our_pid() {
  pid_alive "${1:-}" && tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF -- "$BASE"
}

# Rewrite BASE/services.env from the per-service fragments.
write_env() {
  cat "$BASE"/zk.env "$BASE"/mysql.env 2>/dev/null > "$BASE/services.env.tmp" || true
  mv "$BASE/services.env.tmp" "$BASE/services.env"
}

# If this run fails half-way, stop what it started (the caller gets no env for it).
STARTED=()
cleanup_on_fail() {
  local st=$? p
  [ $st -eq 0 ] && return
  for p in "${STARTED[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup_on_fail EXIT

# ---- ZooKeeper --------------------------------------------------------------------------------
zk_ready() {
  # `ruok` answers imok before the server serves; `srvr` says Mode: standalone only when it does.
  local out
  out=$( { exec 3<>"/dev/tcp/$ADDR/$1" && printf 'srvr' >&3 && timeout 2 cat <&3; } 2>/dev/null ) || true
  [[ $out == *"Mode: standalone"* ]]
}

start_zk() {
  install_missing libzookeeper-java libslf4j-java
  command -v java >/dev/null || install_missing openjdk-17-jre-headless
  local d=$BASE/zk port pid
  mkdir -p "$d/data"
  if [ -f "$d/pid" ] && our_pid "$(cat "$d/pid")"; then
    die "ZooKeeper already running (pid $(cat "$d/pid"))"
  fi
  if [ -f "$d/zoo.cfg" ]; then
    port=$(sed -n 's/^clientPort=//p' "$d/zoo.cfg")
    port_listening "$port" && die "ZooKeeper port $port (from $d/zoo.cfg) is taken"
  else
    port=$(free_port)
    cat > "$d/zoo.cfg" <<EOF
dataDir=$d/data
clientPort=$port
clientPortAddress=$ADDR
admin.enableServer=false
4lw.commands.whitelist=srvr,ruok,stat,mntr,conf
tickTime=2000
initLimit=10
syncLimit=5
maxClientCnxns=200
EOF
  fi
  local cp=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar
  nohup java -Xms16m -Xmx64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData \
      -Dzookeeper.log.dir="$d" -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain \
      "$d/zoo.cfg" </dev/null >"$d/log" 2>&1 &
  pid=$!
  STARTED+=("$pid")
  echo "$pid" > "$d/pid"
  local end=$((SECONDS + ZK_DEADLINE))
  until zk_ready "$port"; do
    if ! pid_alive "$pid" || [ $SECONDS -ge $end ]; then
      echo "services-up: ZooKeeper did not become ready; log tail:" >&2
      tail -n 30 "$d/log" >&2 || true
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$d/pid"
      exit 1
    fi
    sleep 0.1
  done
  printf 'ZK_HOSTS=%s:%s\nZK_PID=%s\n' "$ADDR" "$port" "$pid" > "$BASE/zk.env"
  write_env
  echo "services-up: ZooKeeper ready on $ADDR:$port (pid $pid)" >&2
}

# ---- MariaDB ----------------------------------------------------------------------------------
my_sql() { mariadb --no-defaults --protocol=socket --socket="$BASE/my/sock" -uroot "$@"; }

start_mysql() {
  install_missing mariadb-server-core mariadb-client-core
  local d=$BASE/my port pid
  mkdir -p "$d"
  if [ -f "$d/pid" ] && our_pid "$(cat "$d/pid")"; then
    die "MariaDB already running (pid $(cat "$d/pid"))"
  fi
  if [ -f "$d/port" ]; then
    port=$(cat "$d/port")
    port_listening "$port" && die "MariaDB port $port (from $d/port) is taken"
  else
    port=$(free_port); echo "$port" > "$d/port"
  fi
  if [ ! -d "$d/data/mysql" ]; then
    mariadb-install-db --no-defaults --user=root --datadir="$d/data" \
      --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve --force \
      --innodb-log-file-size=8M >"$d/install.log" 2>&1 \
      || { tail -n 30 "$d/install.log" >&2; die "mariadb-install-db failed"; }
  fi
  mkdir -p "$d/tmp"
  # --no-defaults must come first. Lean options, except for InnoDB: with a 16 MiB buffer pool
  # and an 8 MiB redo log the broker's insert/delete churn kept ~9000 pages/s going in and out
  # (reads of pages just evicted, checkpoint flushes every fraction of a second) and the MySQL
  # store did 3k msg/s; 256 MiB of each made it 16k (docs/BENCHMARKS.md). The buffer pool is
  # reserved lazily: RSS grows only with the pages really used. Commits still fsync the redo
  # log (innodb_flush_log_at_trx_commit=1, the default).
  nohup mariadbd --no-defaults --user=root --datadir="$d/data" --tmpdir="$d/tmp" \
      --socket="$d/sock" --pid-file="$d/mariadbd.pid" --log-error="$d/log" \
      --port="$port" --bind-address="$ADDR" --skip-name-resolve \
      --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
      --innodb-buffer-pool-size=256M --innodb-log-file-size=256M --innodb-log-buffer-size=16M \
      --key-buffer-size=1M --performance-schema=OFF --max-connections=100 \
      --table-open-cache=200 --thread-cache-size=4 --skip-log-bin \
      </dev/null >"$d/stdout" 2>&1 &
  pid=$!
  STARTED+=("$pid")
  echo "$pid" > "$d/pid"
  local end=$((SECONDS + MY_DEADLINE))
  until my_sql -e 'SELECT 1' >/dev/null 2>&1; do
    if ! pid_alive "$pid" || [ $SECONDS -ge $end ]; then
      echo "services-up: MariaDB did not become ready; log tail:" >&2
      tail -n 30 "$d/log.err" "$d/stdout" >&2 || true
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$d/pid"
      exit 1
    fi
    sleep 0.1
  done
  # TCP from 127.0.0.1 matches 'kite'@'%' under skip-name-resolve; the socket matches @localhost.
  my_sql <<'EOF'
CREATE DATABASE IF NOT EXISTS kite;
CREATE USER IF NOT EXISTS 'kite'@'localhost' IDENTIFIED BY 'kite';
CREATE USER IF NOT EXISTS 'kite'@'127.0.0.1' IDENTIFIED BY 'kite';
CREATE USER IF NOT EXISTS 'kite'@'%' IDENTIFIED BY 'kite';
GRANT ALL PRIVILEGES ON *.* TO 'kite'@'localhost' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'kite'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'kite'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
EOF
  mariadb --no-defaults --protocol=tcp -h"$ADDR" -P"$port" -ukite -pkite -e 'SELECT 1' >/dev/null \
    || die "TCP login as kite failed"
  cat > "$BASE/mysql.env" <<EOF
MYSQL_HOST=$ADDR
MYSQL_PORT=$port
MYSQL_USER=kite
MYSQL_PASSWORD=kite
MYSQL_DB=kite
MYSQL_SOCKET=$d/sock
MYSQL_PID=$pid
EOF
  write_env
  echo "services-up: MariaDB ready on $ADDR:$port (pid $pid)" >&2
}

[ $WANT_ZK -eq 1 ] && start_zk
[ $WANT_MY -eq 1 ] && start_mysql
exit 0
