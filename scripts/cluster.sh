#!/usr/bin/env bash
# The local cluster harness (docs/cluster.md, The local harness): a
# cluster of switch nodes and the services it runs on, on loopback with
# free ports.
#
#   scripts/cluster.sh up DIR     starts etcd (one member; ETCD_MEMBERS=3
#                                 for three), a PostgreSQL server (fsync
#                                 on, an empty database `switch`) and
#                                 NODES switch nodes (3 by default; 0 for
#                                 none), writes DIR/services.env and, once
#                                 every shard is served, DIR/nodes.json
#   scripts/cluster.sh down DIR   stops the nodes (SIGTERM, then SIGKILL
#                                 after 10 s), PostgreSQL and etcd by the
#                                 pids `up` recorded; running it twice is
#                                 harmless; DIR and its logs stay
#
# The nodes are the switch binary SWITCH_BIN (default: `switch` on PATH),
# named n1..nN, each with DIR/nN.toml (the embedded default, archive.url
# the PostgreSQL here, [cluster] with 16 shards), DIR/nN/ (data) and
# DIR/nN.log; NODE_CONFIG_SED, when set, is a sed script applied to each
# node's config (benches/cluster.sh raises limits with it);
# RECORDS_RETENTION_S, when set, is cluster.records_retention_s.
# LINK_TLS=1 makes the node links mutual TLS: a CA and a certificate per
# node for 127.0.0.1 (openssl, in DIR/pki/), named by each node's
# cluster.link_tls_cert_file, _key_file and _ca_file.
# DIR/nodes.json: [{"name", "iso_addr", "frame_addr", "http_addr",
# "link_addr", "pid"}, ...]. PG_STANDBY=1 adds a synchronous streaming
# standby (DIR/pg-standby/, a base backup of the primary; the primary's
# commits wait for it) and PG_URL names both hosts with
# target_session_attrs=read-write, so after a kill of the primary and
# `pg_ctl promote -D "$PG_STANDBY_DATA"` the nodes write to the standby.
# `switch cluster status --etcd "$ETCD_ENDPOINTS"` reads the etcd here.
#
# DIR/services.env, for `source`: ETCD_ENDPOINTS (comma-separated),
# ETCD_PIDS (space-separated), PG_URL, PG_DATA, PG_STANDBY_DATA (empty
# without a standby), NODE_PIDS. Logs: DIR/etcd<m>.log,
# DIR/pg/server.log, DIR/pg-standby/server.log, DIR/n<i>.log. Needs Debian's
# etcd-server and postgresql (scripts/install-test-deps.sh); as root,
# PostgreSQL runs as the `postgres` user through runuser, as the tests'
# server does.
set -euo pipefail

usage() {
  sed -n '2,42p' "$0" | sed 's/^# \{0,1\}//'
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

# Whether pid $1 runs (a zombie not yet reaped by its new parent does not).
alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null &&
    [ "$(ps -o stat= -p "$1" | cut -c1)" != Z ]
}

# SIGTERM to each of PIDS, then up to TENTHS tenths of a second each to
# exit, then SIGKILL: stop_pids TENTHS PIDS...
stop_pids() {
  local tenths=$1 pid i
  shift
  for pid in "$@"; do
    alive "$pid" && kill -TERM "$pid"
  done
  for pid in "$@"; do
    for i in $(seq 1 "$tenths"); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      kill -KILL "$pid" || true
    fi
  done
}

up() {
  local dir=$1
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/services.env" ]; then
    # shellcheck disable=SC1091
    if (source "$dir/services.env" && alive "${ETCD_PIDS%% *}"); then
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

  local members=${ETCD_MEMBERS:-1}
  if ! [[ "$members" =~ ^[1-7]$ ]]; then
    echo "cluster.sh: ETCD_MEMBERS=$members: expected 1 to 7" >&2
    exit 1
  fi
  local m clients=() peers=() initial="" endpoints="" pids=""
  for m in $(seq 0 $((members - 1))); do
    clients+=("$(free_port)")
    peers+=("$(free_port)")
    initial+="${initial:+,}e$m=http://127.0.0.1:${peers[$m]}"
    endpoints+="${endpoints:+,}http://127.0.0.1:${clients[$m]}"
  done
  for m in $(seq 0 $((members - 1))); do
    rm -rf "$dir/etcd$m"
    # nohup: etcd outlives this script, and the shell it was started from.
    nohup etcd --name="e$m" --data-dir="$dir/etcd$m" \
      --listen-client-urls="http://127.0.0.1:${clients[$m]}" \
      --advertise-client-urls="http://127.0.0.1:${clients[$m]}" \
      --listen-peer-urls="http://127.0.0.1:${peers[$m]}" \
      --initial-advertise-peer-urls="http://127.0.0.1:${peers[$m]}" \
      --initial-cluster="$initial" \
      >"$dir/etcd$m.log" 2>&1 &
    pids+="${pids:+ }$!"
  done
  # Every member healthy (a leader elected, its store working), 30 s at most.
  local i pid
  for m in $(seq 0 $((members - 1))); do
    pid=$(echo "$pids" | cut -d' ' -f$((m + 1)))
    for i in $(seq 1 300); do
      if curl -sf "http://127.0.0.1:${clients[$m]}/health" | grep -q '"health":"true"'; then
        break
      fi
      if ! alive "$pid" || [ "$i" -eq 300 ]; then
        echo "cluster.sh: etcd member $m not healthy; see $dir/etcd$m.log" >&2
        exit 1
      fi
      sleep 0.1
    done
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

  local pg_url=postgresql://postgres@127.0.0.1:$port/switch standby_data=""
  if [ "${PG_STANDBY:-0}" = 1 ]; then
    local standby=$dir/pg-standby standby_port
    standby_port=$(free_port)
    rm -rf "$standby"
    mkdir -p "$standby"
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres: "$standby"
    fi
    # -R: standby.signal and primary_conninfo; -c fast: checkpoint now.
    as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$port" -U postgres       -D "$standby/data" -R -X stream -c fast --no-sync
    as_pg "$bin/pg_ctl" start -D "$standby/data" -l "$standby/server.log" -w -t 30       -o "-k $standby -p $standby_port -c listen_addresses=127.0.0.1 -c fsync=on" >/dev/null
    as_pg "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
      -c "ALTER SYSTEM SET synchronous_standby_names = '*'" -c 'SELECT pg_reload_conf()' >/dev/null
    local t streaming
    for t in $(seq 1 300); do
      streaming=$(as_pg "$bin/psql" -tA -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")
      [ "$streaming" = 0 ] || break
      if [ "$t" -eq 300 ]; then
        echo "cluster.sh: the standby is not streaming; see $standby/server.log" >&2
        exit 1
      fi
      sleep 0.1
    done
    standby_data=$standby/data
    pg_url="postgresql://postgres@127.0.0.1:$port,127.0.0.1:$standby_port/switch?target_session_attrs=read-write"
  fi
  cat >"$dir/services.env" <<EOF
ETCD_ENDPOINTS=$endpoints
ETCD_PIDS="$pids"
PG_URL=$pg_url
PG_DATA=$pg/data
PG_STANDBY_DATA=$standby_data
NODE_PIDS=""
EOF
  echo "cluster.sh: up in $dir: etcd $endpoints (pids $pids), PostgreSQL $pg_url"
  start_nodes "$dir" "$endpoints" "$pg_url"
}

# Starts NODES switch nodes and writes DIR/nodes.json once every shard is
# served (60 s at most).
start_nodes() {
  local dir=$1 endpoints=$2 pg_url=$3
  local nodes=${NODES:-3}
  if ! [[ "$nodes" =~ ^[0-9]$ ]]; then
    echo "cluster.sh: NODES=$nodes: expected 0 to 9" >&2
    exit 1
  fi
  [ "$nodes" -gt 0 ] || return 0
  local bin=${SWITCH_BIN:-switch}
  if ! command -v "$bin" >/dev/null; then
    echo "cluster.sh: the switch binary ($bin) not found: set SWITCH_BIN" >&2
    exit 1
  fi
  local etcd_list i name iso frame http link node_pids="" json="["
  etcd_list=$(echo "$endpoints" | sed 's/[^,][^,]*/"&"/g')
  # One card-token key for every node (cluster mode needs it: a card is
  # counted by the node serving its token's shard).
  local token_key
  token_key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  local pki=$dir/pki
  if [ "${LINK_TLS:-0}" = 1 ]; then
    rm -rf "$pki"
    mkdir -p "$pki"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$pki/ca.key" -out "$pki/ca.pem" -days 7 -subj /CN=switch-cluster-ca 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$pki/node.ext"
    for i in $(seq 1 "$nodes"); do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$pki/n$i.key" -out "$pki/n$i.csr" -subj "/CN=n$i" 2>/dev/null
      openssl x509 -req -in "$pki/n$i.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 7 -extfile "$pki/node.ext" -out "$pki/n$i.pem" 2>/dev/null
    done
  fi
  for i in $(seq 1 "$nodes"); do
    name=n$i
    iso=127.0.0.1:$(free_port)
    frame=127.0.0.1:$(free_port)
    http=127.0.0.1:$(free_port)
    link=127.0.0.1:$(free_port)
    "$bin" default-config | sed "s|^url = \"\"|url = \"$pg_url\"|" |
      sed "${NODE_CONFIG_SED:-}" >"$dir/$name.toml"
    cat >>"$dir/$name.toml" <<EOF

[security]
token_key_hex = "$token_key"

[cluster]
node_id = "$name"
etcd_endpoints = [$etcd_list]
shard_count = 16
link_addr = "$link"
${RECORDS_RETENTION_S:+records_retention_s = $RECORDS_RETENTION_S}
EOF
    if [ "${LINK_TLS:-0}" = 1 ]; then
      cat >>"$dir/$name.toml" <<EOF
link_tls_cert_file = "$pki/$name.pem"
link_tls_key_file = "$pki/$name.key"
link_tls_ca_file = "$pki/ca.pem"
EOF
    fi
    nohup "$bin" --config "$dir/$name.toml" --data-dir "$dir/$name" \
      --iso-addr "$iso" --frame-addr "$frame" --http-addr "$http" \
      >"$dir/$name.log" 2>&1 &
    node_pids+="${node_pids:+ }$!"
    [ "$i" -eq 1 ] || json+=","
    json+="{\"name\":\"$name\",\"iso_addr\":\"$iso\",\"frame_addr\":\"$frame\",\"http_addr\":\"$http\",\"link_addr\":\"$link\",\"pid\":$!}"
  done
  json+="]"
  sed -i "s|^NODE_PIDS=.*|NODE_PIDS=\"$node_pids\"|" "$dir/services.env"
  # Every shard served: the nodes' served shards add up to 16.
  local t served pid h m
  for t in $(seq 1 600); do
    served=0
    for i in $(seq 1 "$nodes"); do
      pid=$(echo "$node_pids" | cut -d' ' -f"$i")
      if ! alive "$pid"; then
        echo "cluster.sh: node n$i exited; see $dir/n$i.log" >&2
        exit 1
      fi
      h=$(echo "$json" | python3 -c "import json,sys; print(json.load(sys.stdin)[$((i - 1))]['http_addr'])")
      m=$(curl -sf "http://$h/metrics" 2>/dev/null |
        awk '$1 == "switch_cluster_served_shards" { printf "%d", $2 }' || true)
      served=$((served + ${m:-0}))
    done
    if [ "$served" -eq 16 ]; then
      echo "$json" >"$dir/nodes.json"
      echo "cluster.sh: $nodes nodes serve every shard (pids $node_pids); $dir/nodes.json"
      return 0
    fi
    sleep 0.1
  done
  echo "cluster.sh: the nodes did not serve every shard within 60 s; see $dir/n*.log" >&2
  exit 1
}

down() {
  local dir=$1
  if [ ! -f "$dir/services.env" ]; then
    echo "cluster.sh: nothing recorded in $dir (never up, or down already)"
    return 0
  fi
  local ETCD_PIDS PG_DATA PG_STANDBY_DATA="" NODE_PIDS="" data
  # shellcheck disable=SC1091
  source "$dir/services.env"
  # shellcheck disable=SC2086
  stop_pids 100 $NODE_PIDS
  for data in "$PG_DATA" $PG_STANDBY_DATA; do
    if [ -f "$data/postmaster.pid" ]; then
      as_pg "$(pg_bin)/pg_ctl" stop -D "$data" -m fast -w -t 30 >/dev/null || true
    fi
  done
  # shellcheck disable=SC2086
  stop_pids 50 $ETCD_PIDS
  rm -f "$dir/services.env"
  echo "cluster.sh: down ($dir kept, with its logs)"
}

[ $# -eq 2 ] || usage
case $1 in
  up) up "$2" ;;
  down) down "$2" ;;
  *) usage ;;
esac
