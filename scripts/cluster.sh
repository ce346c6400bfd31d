#!/usr/bin/env bash
# The local cluster harness (docs/cluster.md, The local harness), first
# slice: the services a cluster runs on, on loopback with free ports.
#
#   scripts/cluster.sh up DIR     starts one etcd member and a PostgreSQL
#                                 server (fsync on, an empty database
#                                 `switch`) and writes DIR/services.env
#   scripts/cluster.sh down DIR   stops them by the pids `up` recorded;
#                                 running it twice is harmless; DIR and its
#                                 logs stay
#
# No switch node is started and DIR/nodes.json is not written: cluster
# mode is not served yet (a switch refuses [cluster] at start). Nor are
# ETCD_MEMBERS=3 or PG_STANDBY=1 built. `switch cluster status --etcd
# "$ETCD_ENDPOINTS"` reads the etcd started here.
#
# DIR/services.env, for `source`: ETCD_ENDPOINTS, PG_URL, ETCD_PID,
# PG_DATA. Logs: DIR/etcd.log, DIR/pg/server.log. Needs Debian's
# etcd-server and postgresql (scripts/install-test-deps.sh); as root,
# PostgreSQL runs as the `postgres` user through runuser, as the tests'
# server does.
set -euo pipefail

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

# A free loopback port (free when probed).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The newest PostgreSQL server binaries Debian installed.
pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$bin" ] || [ ! -x "$bin/pg_ctl" ]; then
    echo "cluster.sh: PostgreSQL server binaries not found under /usr/lib/postgresql: run scripts/install-test-deps.sh" >&2
    exit 1
  fi
  echo "$bin"
}

# Runs a PostgreSQL command as the cluster's owner.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null
}

up() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/services.env" ]; then
    # shellcheck disable=SC1091
    if (source "$dir/services.env" && alive "$ETCD_PID"); then
      echo "cluster.sh: $dir is up already (scripts/cluster.sh down $dir first)" >&2
      exit 1
    fi
  fi
  if ! command -v etcd >/dev/null; then
    echo "cluster.sh: etcd not found: run scripts/install-test-deps.sh" >&2
    exit 1
  fi
  local bin
  bin=$(pg_bin)

  local client peer
  client=$(free_port)
  peer=$(free_port)
  rm -rf "$dir/etcd"
  # nohup: etcd outlives this script, and the shell it was started from.
  nohup etcd --name=n0 --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$client" \
    --advertise-client-urls="http://127.0.0.1:$client" \
    --listen-peer-urls="http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
    --initial-cluster="n0=http://127.0.0.1:$peer" \
    >"$dir/etcd.log" 2>&1 &
  local etcd_pid=$!
  local i
  for i in $(seq 1 300); do
    if curl -sf "http://127.0.0.1:$client/health" | grep -q '"health":"true"'; then
      break
    fi
    if ! alive "$etcd_pid"; then
      echo "cluster.sh: etcd exited; see $dir/etcd.log" >&2
      exit 1
    fi
    sleep 0.1
  done

  local pg=$dir/pg port
  port=$(free_port)
  rm -rf "$pg"
  mkdir -p "$pg"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$pg"
  fi
  as_pg "$bin/initdb" -D "$pg/data" -U postgres -A trust -E UTF8 --locale=C \
    --no-sync --no-instructions >"$pg/initdb.log" 2>&1
  as_pg "$bin/pg_ctl" start -D "$pg/data" -l "$pg/server.log" -w -t 30 \
    -o "-k $pg -p $port -c listen_addresses=127.0.0.1 -c fsync=on" >/dev/null
  as_pg "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c 'CREATE DATABASE switch' >/dev/null

  cat >"$dir/services.env" <<EOF
ETCD_ENDPOINTS=http://127.0.0.1:$client
ETCD_PID=$etcd_pid
PG_URL=postgresql://postgres@127.0.0.1:$port/switch
PG_DATA=$pg/data
EOF
  echo "cluster.sh: up in $dir: etcd http://127.0.0.1:$client (pid $etcd_pid), PostgreSQL postgresql://postgres@127.0.0.1:$port/switch"
  echo "cluster.sh: no switch node started: cluster mode is not served yet"
}

down() {
  local dir=$1
  if [ ! -f "$dir/services.env" ]; then
    echo "cluster.sh: nothing recorded in $dir (never up, or down already)"
    return 0
  fi
  local ETCD_PID PG_DATA
  # shellcheck disable=SC1091
  source "$dir/services.env"
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    as_pg "$(pg_bin)/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 30 >/dev/null || true
  fi
  if alive "$ETCD_PID"; then
    kill -TERM "$ETCD_PID"
    local i
    for i in $(seq 1 50); do
      alive "$ETCD_PID" || break
      sleep 0.1
    done
    if alive "$ETCD_PID"; then
      kill -KILL "$ETCD_PID" || true
    fi
  fi
  rm -f "$dir/services.env"
  echo "cluster.sh: down ($dir kept, with its logs)"
}

[ $# -eq 2 ] || usage
case $1 in
  up) up "$2" ;;
  down) down "$2" ;;
  *) usage ;;
esac
