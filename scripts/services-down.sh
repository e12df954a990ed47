#!/usr/bin/env bash
# Stop what scripts/services-up.sh started in BASE, by PID.
#
#   scripts/services-down.sh BASE [zk] [mysql] [--purge]    # default: both
#
# Each PID is signalled only if /proc/PID/cmdline contains BASE (PID reuse guard): SIGTERM,
# then SIGKILL after STOP_DEADLINE seconds (default 10). A zombie counts as stopped (until
# PID 1 reaps it, kill -0 still succeeds, so the state is read from /proc/PID/stat).
# --purge removes BASE afterwards (data dirs, logs, services.env).
set -euo pipefail

die() { echo "services-down: $*" >&2; exit 1; }

[ $# -ge 1 ] || die "usage: $0 BASE [zk] [mysql] [--purge]"
BASE=$1; shift
[ -d "$BASE" ] || exit 0
BASE=$(cd "$BASE" && pwd)
STOP_DEADLINE=${STOP_DEADLINE:-10}

PURGE=0; DO_ZK=0; DO_MY=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    zk) DO_ZK=1 ;;
    mysql|mariadb) DO_MY=1 ;;
    *) die "unknown argument '$a'" ;;
  esac
done
[ $DO_ZK -eq 0 ] && [ $DO_MY -eq 0 ] && { DO_ZK=1; DO_MY=1; }

pid_alive() {
  local st
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] || return 1
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

our_pid() {
  pid_alive "${1:-}" && tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$BASE"
}

# stop NAME PIDFILE
stop() {
  local name=$1 pidfile=$2 pid end
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if our_pid "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    end=$((SECONDS + STOP_DEADLINE))
    while pid_alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.05; done
    if pid_alive "$pid"; then
      echo "services-down: $name (pid $pid) ignored SIGTERM for ${STOP_DEADLINE}s, sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      while pid_alive "$pid"; do sleep 0.05; done
    fi
    echo "services-down: $name (pid $pid) stopped" >&2
  fi
  rm -f "$pidfile"
}

if [ $DO_ZK -eq 1 ]; then
  stop ZooKeeper "$BASE/zk/pid"
  rm -f "$BASE/zk.env"
fi
if [ $DO_MY -eq 1 ]; then
  stop MariaDB "$BASE/my/pid"
  rm -f "$BASE/mysql.env"
fi
if [ -f "$BASE/services.env" ]; then
  cat "$BASE"/zk.env "$BASE"/mysql.env 2>/dev/null > "$BASE/services.env" || true
fi
if [ $PURGE -eq 1 ]; then
  # Purge only when nothing of ours still runs in BASE.
  for f in "$BASE/zk/pid" "$BASE/my/pid"; do
    [ -f "$f" ] && our_pid "$(cat "$f")" && die "not purging: $f still running"
  done
  rm -rf "$BASE"
fi
exit 0
