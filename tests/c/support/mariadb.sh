#!/usr/bin/env bash
# Start/stop a throw-away MariaDB for the tests (docs: shared spec services.md): 127.0.0.1
# only, a free port, no systemd, stopped by PID. Used by test_store_mysql when MYSQL_HOST is
# unset and scripts/services-up.sh does not exist.
#   tests/c/support/mariadb.sh up BASE     # writes BASE/services.env (MYSQL_HOST, ...)
#   tests/c/support/mariadb.sh down BASE   # stops it (by the PID in BASE/mysql/mariadbd.pid)
set -euo pipefail
cmd=${1:?usage: mariadb.sh up|down BASE}
BASE=${2:?usage: mariadb.sh up|down BASE}
D=$BASE/mysql
# the client would follow MYSQL_HOST/MYSQL_TCP_PORT/... from a loaded services.env (TCP to
# 3306 instead of our socket)
unset MYSQL_HOST MYSQL_TCP_PORT MYSQL_UNIX_PORT MYSQL_PWD
PIDFILE=$D/mariadbd.pid

stop() {
  [ -f "$PIDFILE" ] || return 0
  local pid; pid=$(cat "$PIDFILE" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  # only our server: its command line names this BASE
  if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$D"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || echo gone)
      [ "$state" = gone ] || [ "$state" = Z ] && break
      sleep 0.1
    done
  fi
  rm -f "$PIDFILE"
}

if [ "$cmd" = down ]; then
  stop
  exit 0
fi
[ "$cmd" = up ] || { echo "mariadb.sh: unknown command $cmd" >&2; exit 2; }

for b in mariadbd mariadb-install-db mariadb; do
  if ! command -v "$b" >/dev/null && [ ! -x "/usr/sbin/$b" ]; then
    echo "mariadb.sh: $b not found: apt-get install mariadb-server-core mariadb-client-core" >&2
    exit 2
  fi
done
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)
mkdir -p "$D/data" "$D/tmp"
if [ ! -d "$D/data/mysql" ]; then
  mariadb-install-db --no-defaults --user=root --datadir="$D/data" \
    --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve --force \
    --innodb-log-file-size=8M > "$D/install.log" 2>&1 ||
    { tail -20 "$D/install.log" >&2; exit 1; }
fi
# a free port: ask the kernel for one, then hand it to mariadbd
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
       echo $((20000 + RANDOM % 20000)))
SOCK=$D/mysqld.sock
nohup "$MARIADBD" --no-defaults --user=root --datadir="$D/data" --tmpdir="$D/tmp" \
  --socket="$SOCK" --pid-file="$PIDFILE" --log-error="$D/error.log" --port="$PORT" \
  --bind-address=127.0.0.1 --skip-name-resolve --character-set-server=utf8mb4 \
  --collation-server=utf8mb4_general_ci --innodb-buffer-pool-size=256M \
  --innodb-log-file-size=256M --innodb-log-buffer-size=16M --performance-schema=OFF --skip-log-bin \
  --max-connections=500 < /dev/null > "$D/stdout.log" 2>&1 &
for i in $(seq 200); do
  mariadb --no-defaults --protocol=socket --socket="$SOCK" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
  if [ "$i" = 200 ]; then echo "mariadb.sh: server did not start" >&2; tail -20 "$D/error.log" >&2; stop; exit 1; fi
  sleep 0.05
done
USER=kiteq PASS=kiteq
mariadb --no-defaults --protocol=socket --socket="$SOCK" -uroot -e "
  CREATE USER IF NOT EXISTS '$USER'@'%' IDENTIFIED BY '$PASS';
  CREATE USER IF NOT EXISTS '$USER'@'localhost' IDENTIFIED BY '$PASS';
  GRANT ALL ON *.* TO '$USER'@'%';
  GRANT ALL ON *.* TO '$USER'@'localhost';"
cat > "$BASE/services.env" <<ENV
MYSQL_HOST=127.0.0.1
MYSQL_PORT=$PORT
MYSQL_SOCKET=$SOCK
MYSQL_USER=$USER
MYSQL_PASSWORD=$PASS
MYSQL_PID=$(cat "$PIDFILE")
MYSQL_PIDFILE=$PIDFILE
ENV
echo "mariadb.sh: MariaDB on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"
