#!/usr/bin/env bash
# Issue 21's targets: the switch with a webhook for every payment against
# the same build with webhooks off, alternating, in one run.
#
# Each round starts the switch twice (webhooks off, then on; the order
# swaps every round), each time on a fresh data directory, and runs:
#   open   loadgen open loop at RATE authorizations/s for DURATION_S;
#          the sink (loadgen webhook-sink) answers at once;
#   closed loadgen closed loop CLOSED (connections x depth).
# With webhooks on it also records: the queue depth every second, the
# change-to-delivery latency (switch_webhook_delivery_seconds, between
# scrapes), how long the queue took to drain after the load and the
# deliveries per second reached. Then, once per round, the slow-merchant
# run: merchant 1's endpoint answers after SLOW_MS, merchant 2's at once,
# both sent SLOW_RATE authorizations/s; merchant 2's delivery latency
# (switch_merchant_webhook_delivery_seconds, [metrics] merchant_labels).
#
# Prints one line per run and, at the end, the medians of the per-round
# ratios (on / off). Everything is a variable, e.g.
#   ROUNDS=5 DURATION_S=10 benches/webhooks.sh
#   SWITCH=./switch-before ROUNDS=1 benches/webhooks.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION_S=${DURATION_S:-10}
RATE=${RATE:-20000}
OPEN_CONNECTIONS=${OPEN_CONNECTIONS:-64}
CLOSED=${CLOSED:-64x16}
SLOW_RATE=${SLOW_RATE:-1000}
SLOW_MS=${SLOW_MS:-5000}
DRAIN_WAIT_S=${DRAIN_WAIT_S:-120}            # most seconds to wait for the queue to empty
BASE_PORT=${BASE_PORT:-17700}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
SWITCH=${SWITCH:-$CARGO_TARGET_DIR/release/switch}
BUILD=${BUILD:-1}                            # 0: use the binaries as they are
MODES=${MODES:-"off on"}                     # the runs of a round (order swaps every other round)
SLOW=${SLOW:-1}                              # 0: no slow-merchant run
SWITCH_ARGS=${SWITCH_ARGS:-}                 # more flags for the switch, e.g. --journal-ack immediate

if [[ $BUILD == 1 ]]; then
    echo "building switch and loadgen" >&2
    cargo build --release -q -p switch -p loadgen
fi
LOADGEN=$CARGO_TARGET_DIR/release/loadgen
PROM="python3 benches/prom.py"

WORK=$(mktemp -d -t webhooks-bench.XXXXXX)
RESULTS=$WORK/results.txt
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# start, stop, wait_port.
# shellcheck source=benches/procs.sh
source benches/procs.sh

SINK_PORT=$((BASE_PORT + 5))
start "$WORK/sink.log" "$LOADGEN" webhook-sink --addr "127.0.0.1:$SINK_PORT" --slow-ms "$SLOW_MS"
wait_port "$SINK_PORT" "$STARTED" "$WORK/sink.log"
SINK=http://127.0.0.1:$SINK_PORT
SINK_PID=$STARTED

# CPU seconds a process has used (user + system).
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"; }

ISO=$((BASE_PORT + 10))
FRAME=$((BASE_PORT + 11))
HTTP=$((BASE_PORT + 12))
METRICS=http://127.0.0.1:$HTTP/metrics

scrape() { curl -sf "$METRICS" >"$1"; }

# switch_up DATA [MID=PATH...]: a switch on DATA with these endpoints.
switch_up() {
    local data=$1
    shift
    rm -rf "$data"
    mkdir -p "$data"
    local config=$WORK/switch.toml
    "$SWITCH" default-config |
        sed -e 's/^payments_max = .*/payments_max = 20000000/' \
            -e 's/^idempotency_entries_max = .*/idempotency_entries_max = 20000000/' >"$config"
    printf '\n[metrics]\nmerchant_labels = true\n' >>"$config"
    local pair
    for pair in "$@"; do
        "$SWITCH" --config "$config" webhooks set --data-dir "$data" \
            --merchant "${pair%%=*}" --url "$SINK/${pair#*=}" >/dev/null
    done
    start "$WORK/switch.log" "$SWITCH" --config "$config" --iso-addr "127.0.0.1:$ISO" \
        --frame-addr "127.0.0.1:$FRAME" --http-addr "127.0.0.1:$HTTP" --data-dir "$data" $SWITCH_ARGS
    SWITCH_PID=$STARTED
    wait_port "$ISO" "$SWITCH_PID" "$WORK/switch.log"
}

# Seconds until switch_webhook_queue_depth is 0 (at most DRAIN_WAIT_S;
# the gauge is refreshed every second).
drain() {
    local t0=$SECONDS depth
    while ((SECONDS - t0 < DRAIN_WAIT_S)); do
        scrape "$WORK/now.prom"
        depth=$($PROM value "$WORK/now.prom" switch_webhook_queue_depth)
        if [[ $depth == 0 ]]; then
            # Queued events not yet counted by the gauge: the next refresh.
            sleep 1.2
            scrape "$WORK/now.prom"
            depth=$($PROM value "$WORK/now.prom" switch_webhook_queue_depth)
            [[ $depth == 0 ]] && break
        fi
        sleep 0.5
    done
    echo $((SECONDS - t0))
}

# Samples the queue depth every second into $1 until killed.
sample_depth() {
    while true; do
        if curl -sf "$METRICS" >"$WORK/sample.prom"; then
            $PROM value "$WORK/sample.prom" switch_webhook_queue_depth >>"$1"
        fi
        sleep 1
    done
}

loadgen_run() {
    local label=$1
    shift
    sleep 1.1 # a new second for F7 (see compare.sh)
    "$LOADGEN" run --addr "127.0.0.1:$ISO" --target switch --label "$label" --mix auth=1 \
        --duration-s "$DURATION_S" -q --json-out "$WORK/runs.json" "$@" >"$WORK/last.json"
}

field() { python3 -c "import json,sys; d=json.load(open('$WORK/last.json')); print($1)"; }

# one MODE ROUND
one() {
    local mode=$1 round=$2
    local endpoints=()
    [[ $mode == on ]] && endpoints=("DEMO00000000001=fast/m1" "DEMO00000000002=fast/m2")
    switch_up "$WORK/data" "${endpoints[@]}"

    # Open loop.
    scrape "$WORK/before.prom"
    local cpu0 sink0
    cpu0=$(cpu_s "$SWITCH_PID")
    sink0=$(cpu_s "$SINK_PID")
    : >"$WORK/depth.txt"
    sample_depth "$WORK/depth.txt" &
    local sampler=$!
    loadgen_run "webhooks-$mode-open" -c "$OPEN_CONNECTIONS" --rate "$RATE"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    local p99 thr
    p99=$(field "d['latency']['p99_us']")
    thr=$(field "d['throughput_per_s']")
    local drained="-" delivery="- - - -" depths="-"
    if [[ $mode == on ]]; then
        drained=$(drain)
        scrape "$WORK/after.prom"
        delivery=$($PROM quantile "$WORK/before.prom" "$WORK/after.prom" switch_webhook_delivery_seconds 0.99)
        depths=$(paste -sd, "$WORK/depth.txt")
    fi
    local cpu sink_cpu
    cpu=$(python3 -c "print(round($(cpu_s "$SWITCH_PID") - $cpu0, 2))")
    sink_cpu=$(python3 -c "print(round($(cpu_s "$SINK_PID") - $sink0, 2))")
    echo "round=$round mode=$mode run=open rate=$RATE answers_per_s=$thr auth_p99_us=$p99 delivery_p99_s,count,le100ms,le1s=${delivery// /,} drain_s=$drained depth_each_s=$depths switch_cpu_s=$cpu sink_cpu_s=$sink_cpu" | tee -a "$RESULTS"

    # Closed loop.
    scrape "$WORK/before.prom"
    local delivered0 t0
    delivered0=$($PROM value "$WORK/before.prom" switch_webhook_deliveries_total result=delivered)
    t0=$(date +%s.%N)
    loadgen_run "webhooks-$mode-closed" -c "${CLOSED%x*}" -d "${CLOSED#*x}"
    p99=$(field "d['latency']['p99_us']")
    thr=$(field "d['throughput_per_s']")
    local answered
    answered=$(field "d['answered']")
    drained="-" delivery="- - - -"
    local rate="-" peak="-"
    if [[ $mode == on ]]; then
        scrape "$WORK/mid.prom"
        peak=$($PROM value "$WORK/mid.prom" switch_webhook_queue_depth)
        drained=$(drain)
        local t1 delivered1
        t1=$(date +%s.%N)
        scrape "$WORK/after.prom"
        delivered1=$($PROM value "$WORK/after.prom" switch_webhook_deliveries_total result=delivered)
        rate=$(python3 -c "print(round(($delivered1 - $delivered0) / ($t1 - $t0)))")
        delivery=$($PROM quantile "$WORK/before.prom" "$WORK/after.prom" switch_webhook_delivery_seconds 0.99)
    fi
    echo "round=$round mode=$mode run=closed answers_per_s=$thr answered=$answered auth_p99_us=$p99 queue_at_end=$peak drain_s=$drained deliveries_per_s=$rate delivery_p99_s,count,le100ms,le1s=${delivery// /,}" | tee -a "$RESULTS"
    stop "$SWITCH_PID"
}

# One merchant's endpoint slow: merchant 2's deliveries.
slow() {
    local round=$1
    switch_up "$WORK/data" "DEMO00000000001=slow/m1" "DEMO00000000002=fast/m2"
    scrape "$WORK/before.prom"
    sleep 1.1
    "$LOADGEN" run --addr "127.0.0.1:$ISO" --target switch --label slow-m1 --mix auth=1 \
        --duration-s "$DURATION_S" -q -c 16 --rate "$SLOW_RATE" >"$WORK/m1.json" &
    local m1=$!
    "$LOADGEN" run --addr "127.0.0.1:$ISO" --target switch --label slow-m2 --mix auth=1 \
        --duration-s "$DURATION_S" -q -c 16 --rate "$SLOW_RATE" \
        --merchant DEMO00000000002 --terminals DEMO0101 >"$WORK/m2.json"
    wait "$m1"
    sleep 2 # merchant 2's last deliveries
    scrape "$WORK/after.prom"
    local m2 m1q
    m2=$($PROM quantile "$WORK/before.prom" "$WORK/after.prom" switch_merchant_webhook_delivery_seconds 0.99 merchant=DEMO00000000002)
    m1q=$($PROM value "$WORK/after.prom" switch_merchant_webhook_queue_depth merchant=DEMO00000000001)
    echo "round=$round run=slow slow_ms=$SLOW_MS rate_each=$SLOW_RATE m2_delivery_p99_s,count,le100ms,le1s=${m2// /,} m1_pending=$m1q" | tee -a "$RESULTS"
    stop "$SWITCH_PID"
}

for ((round = 1; round <= ROUNDS; round++)); do
    order=$MODES
    ((round % 2)) || order=$(echo "$MODES" | tr ' ' '\n' | tac | paste -sd' ')
    for mode in $order; do
        one "$mode" "$round"
    done
    [[ $SLOW == 1 ]] && slow "$round"
done

echo >&2
echo "results: $RESULTS" >&2
python3 - "$RESULTS" <<'EOF'
import re, statistics, sys
rows = [dict(kv.split("=", 1) for kv in line.split()) for line in open(sys.argv[1])]
def get(round_, mode, run):
    return next((r for r in rows if r["round"] == round_ and r.get("mode") == mode and r["run"] == run), None)
rounds = sorted({r["round"] for r in rows}, key=int)
for run in ("open", "closed"):
    thr, p99, diff = [], [], []
    for n in rounds:
        on, off = get(n, "on", run), get(n, "off", run)
        if not on or not off:
            continue
        thr.append(float(on["answers_per_s"]) / float(off["answers_per_s"]))
        p99.append(float(on["auth_p99_us"]) / float(off["auth_p99_us"]))
        diff.append(float(on["auth_p99_us"]) - float(off["auth_p99_us"]))
    if thr:
        print(f"{run}: on/off answers/s median {statistics.median(thr):.2f} (min {min(thr):.2f}, max {max(thr):.2f}); "
              f"auth p99 on/off median {statistics.median(p99):.2f}, on - off median {statistics.median(diff):.0f} us "
              f"(min {min(diff):.0f}, max {max(diff):.0f})")
EOF
