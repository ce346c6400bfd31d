#!/usr/bin/env bash
# The "runs for ever" check of issue 18: the switch on its embedded default
# (durable journal, SQLite archive; or PostgreSQL with ARCHIVE_URL), a fresh
# data directory, and loadgen's closed loop (64 connections x 16 in flight,
# authorizations with distinct cards) for DURATION_S seconds. Every
# SAMPLE_S seconds it prints one CSV line: elapsed seconds, answers/s over
# the interval, the switch's RSS (MiB), payments in memory, remembered
# answers, the archive's lag (records), answers with 96 so far, whether
# backpressure is on. At the end, loadgen's summary (every answer checked),
# then the switch is stopped and started again on the same data directory
# to time its recovery (journal replay after the newest snapshot), and the
# data directory is deleted (KEEP=1 keeps it: at peak rate the archive and
# the journal grow by tens of MB a second).
#
#   DURATION_S=600 benches/soak.sh                      # the issue's run
#   SWITCH_BIN=/path/to/switch DURATION_S=60 benches/soak.sh
#   ARCHIVE_URL=postgres://… benches/soak.sh
#   PG=1 benches/soak.sh        # a throwaway PostgreSQL server (Debian's
#                               # postgresql, run as the postgres user)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION_S=${DURATION_S:-600}
SAMPLE_S=${SAMPLE_S:-10}
CLOSED=${CLOSED:-64x16}
SWITCH_BIN=${SWITCH_BIN:-target/release/switch}
LOADGEN_BIN=${LOADGEN_BIN:-target/release/loadgen}
BASE_PORT=${BASE_PORT:-18500}
ARCHIVE_URL=${ARCHIVE_URL:-}

if [[ ! -x $SWITCH_BIN || ! -x $LOADGEN_BIN ]]; then
    cargo build --release -q -p switch -p loadgen
fi

WORK=$(mktemp -d -t switch-soak.XXXXXX)
ISO=127.0.0.1:$BASE_PORT
FRAME=127.0.0.1:$((BASE_PORT + 1))
HTTP=127.0.0.1:$((BASE_PORT + 2))
CONFIG=$WORK/switch.toml
"$SWITCH_BIN" default-config >"$CONFIG"
PG=${PG:-0}
PG_PID=
if [[ $PG == 1 ]]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PG_DIR=$WORK/pg
    PG_PORT=$((BASE_PORT + 3))
    chmod 755 "$WORK" && mkdir -p "$PG_DIR" && chown postgres: "$PG_DIR"
    runuser -u postgres -- "$PG_BIN/initdb" -A trust --no-sync -U postgres -D "$PG_DIR/data" >/dev/null
    runuser -u postgres -- "$PG_BIN/postgres" -D "$PG_DIR/data" -k "$PG_DIR" -p "$PG_PORT" \
        -c listen_addresses=127.0.0.1 -c fsync=on >"$WORK/pg.log" 2>&1 &
    PG_PID=$!
    for _ in $(seq 1 100); do
        runuser -u postgres -- "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1 && break
        sleep 0.2
    done
    ARCHIVE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi
if [[ -n $ARCHIVE_URL ]]; then
    sed -i "s|^url = \"\"|url = \"$ARCHIVE_URL\"|" "$CONFIG"
fi

"$SWITCH_BIN" --config "$CONFIG" --iso-addr "$ISO" --frame-addr "$FRAME" \
    --http-addr "$HTTP" --data-dir "$WORK/data" 2>"$WORK/switch.log" &
SWITCH_PID=$!
cleanup() {
    kill "$SWITCH_PID" 2>/dev/null || true
    wait "$SWITCH_PID" 2>/dev/null || true
    if [[ -n $PG_PID ]]; then
        kill "$PG_PID" 2>/dev/null || true
        wait "$PG_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP:-0} != 1 ]]; then
        rm -rf "$WORK/data" "$WORK/pg"
    fi
}
trap cleanup EXIT
for _ in $(seq 1 200); do
    curl -sf "http://$HTTP/readyz" >/dev/null && break
    sleep 0.1
done

metric() { # sum of a metric's samples whose line matches $2
    curl -s "http://$HTTP/metrics" | awk -v m="$1" -v f="${2:-}" \
        'index($0, m) == 1 && index($0, f) > 0 { s += $NF } END { printf "%d", s }'
}

"$LOADGEN_BIN" run --addr "$ISO" -c "${CLOSED%x*}" -d "${CLOSED#*x}" \
    --duration-s "$DURATION_S" --mix auth=1 --quiet >"$WORK/loadgen.json" &
LOADGEN_PID=$!

echo "elapsed_s,answers_per_s,rss_mib,payments,answers,archive_lag,code_96,backpressure"
last=0
start=$(date +%s)
while kill -0 "$LOADGEN_PID" 2>/dev/null; do
    sleep "$SAMPLE_S"
    now=$(date +%s)
    total=$(metric switch_requests_total)
    rss=$(awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$SWITCH_PID/status")
    echo "$((now - start)),$(((total - last) / SAMPLE_S)),$rss,$(metric 'switch_payments{'),$(metric switch_idempotency_entries),$(metric switch_archive_lag_records),$(metric switch_requests_total 'code="96"'),$(metric switch_backpressure)"
    last=$total
done
wait "$LOADGEN_PID" || true
cat "$WORK/loadgen.json"
kill "$SWITCH_PID" && wait "$SWITCH_PID" || true
{ du -sh "$WORK/data/journal" "$WORK/data"/archive.sqlite* 2>/dev/null || true; } | sed 's/^/on disk: /'
restart_start=$(date +%s.%N)
"$SWITCH_BIN" --config "$CONFIG" --iso-addr "$ISO" --frame-addr "$FRAME" \
    --http-addr "$HTTP" --data-dir "$WORK/data" 2>"$WORK/restart.log" &
SWITCH_PID=$!
until curl -sf "http://$HTTP/healthz" >/dev/null; do sleep 0.05; done
echo "restart to serving (/healthz): $(echo "$(date +%s.%N) - $restart_start" | bc) s"
grep "journal recovered" "$WORK/restart.log" | sed 's/\x1b\[[0-9;]*m//g'

grep -c "WARN" "$WORK/switch.log" | sed 's/^/warnings in the log: /'
grep "WARN" "$WORK/switch.log" | head -5
echo "work directory: $WORK"
