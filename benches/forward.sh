#!/usr/bin/env bash
# Issue 19's forwarding benchmark: loadgen -> switch -> issuer simulator, all
# on this box, against the same switch build deciding locally, in the same run.
#
# 1. Closed loop (CLOSED, default 64x16), authorizations only, ROUNDS times
#    alternating: a switch routing loadgen's PANs (BIN 41) to the simulator
#    (answering at once), then a switch with no routes (local authorizer).
#    One line per run, then forwarded/s, local/s and their ratio per round.
# 2. Open loop at RATE/s (default 20,000): first loadgen straight at the
#    simulator answering after ISSUER_LATENCY_MS (default 1), its own
#    latency; then through the forwarding switch to it: loadgen's
#    p50/p99/p99.9 and what the switch adds (over ISSUER_LATENCY_MS, and
#    over the simulator alone percentile by percentile); then the same open
#    loop on a local switch for reference.
#
# Every run gets a fresh switch and a fresh data directory; everything
# lives in one temporary directory that is deleted at the end. Variables:
#   DURATION_S=10 ROUNDS=3 benches/forward.sh
#   SWITCH_ACK=immediate UPSTREAM_CONNECTIONS=8 benches/forward.sh
#   SWITCH_BIN=/path/to/another/switch benches/forward.sh   # A/B of builds
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION_S=${DURATION_S:-5}                 # seconds of sending per run
ROUNDS=${ROUNDS:-2}                         # forwarded/local pairs
CLOSED=${CLOSED:-64x16}                     # closed loop: CONNECTIONSxDEPTH
RATE=${RATE:-20000}                         # open loop: requests per second
OPEN_CONNECTIONS=${OPEN_CONNECTIONS:-64}    # open loop connections
ISSUER_LATENCY_MS=${ISSUER_LATENCY_MS:-1}   # open loop: the issuer's delay
LOADGEN_THREADS=${LOADGEN_THREADS:-1}       # loadgen runtime threads
ISSUER_THREADS=${ISSUER_THREADS:-1}         # simulator runtime threads
SWITCH_ACK=${SWITCH_ACK:-durable}           # --journal-ack of the switch
UPSTREAM_CONNECTIONS=${UPSTREAM_CONNECTIONS:-4}          # links to the issuer
UPSTREAM_INFLIGHT=${UPSTREAM_INFLIGHT:-1024}             # inflight_per_link_max
UPSTREAM_TIMEOUT_MS=${UPSTREAM_TIMEOUT_MS:-2000}         # timeout_ms
BASE_PORT=${BASE_PORT:-17600}
SKIP_OPEN=${SKIP_OPEN:-0}                   # 1: closed-loop rounds only
SKIP_CLOSED=${SKIP_CLOSED:-0}               # 1: open-loop run only
SKIP_TIMEOUTS=${SKIP_TIMEOUTS:-0}           # 1: no 10%-timeouts run
TIMEOUT_RATE=${TIMEOUT_RATE:-10000}         # 10%-timeouts run: requests per second
TIMEOUT_MS=${TIMEOUT_MS:-300}               # 10%-timeouts run: timeout_ms
# As in compare.sh: short runs measure speed, not the archive, so memory
# limits are raised out of the way.
SWITCH_PAYMENTS_MAX=${SWITCH_PAYMENTS_MAX:-20000000}
SWITCH_IDEMPOTENCY_ENTRIES_MAX=${SWITCH_IDEMPOTENCY_ENTRIES_MAX:-20000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

ISO=$BASE_PORT HTTP=$((BASE_PORT + 2)) ISSUER=$((BASE_PORT + 3))
FRAME=$((BASE_PORT + 1))

WORK=$(mktemp -d -t switch-forward.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "building switch and loadgen (release)" >&2
cargo build --release -q -p switch -p loadgen
SWITCH=${SWITCH_BIN:-$CARGO_TARGET_DIR/release/switch}
LOADGEN=$CARGO_TARGET_DIR/release/loadgen

# start, stop, wait_port.
# shellcheck source=benches/procs.sh
source benches/procs.sh

# The switch's configuration: the embedded default with the memory limits
# raised; "forwarded" adds the simulator as upstream and routes BIN 41
# (loadgen/src/card.rs: every generated PAN starts with 41) to it.
write_config() {
    local kind=$1 file=$2
    "$SWITCH" default-config |
        sed -e "s/^payments_max = .*/payments_max = $SWITCH_PAYMENTS_MAX/" \
            -e "s/^idempotency_entries_max = .*/idempotency_entries_max = $SWITCH_IDEMPOTENCY_ENTRIES_MAX/" \
            >"$file"
    if [[ $kind == forwarded ]]; then
        cat >>"$file" <<EOF

[[upstreams]]
name = "issuer-sim"
addr = "127.0.0.1:$ISSUER"
profile = "ascii"
length_header = "binary2"
connections = $UPSTREAM_CONNECTIONS
inflight_per_link_max = $UPSTREAM_INFLIGHT
timeout_ms = ${TIMEOUT_OVERRIDE_MS:-$UPSTREAM_TIMEOUT_MS}
echo_interval_s = 30
sign_on = false
acquirer_id = "123456"

[[routes]]
pan_prefixes = ["41"]
upstream = "issuer-sim"
EOF
    fi
}

# Waits until the switch reports its link(s) to the simulator up.
wait_linked() {
    local deadline=$((SECONDS + 20))
    until curl -fsS "http://127.0.0.1:$HTTP/metrics" 2>/dev/null |
        grep -Eq '^switch_upstream_links_connected\{[^}]*\} [1-9]'; do
        if ((SECONDS > deadline)); then
            echo "the switch did not link to the simulator" >&2
            exit 1
        fi
        sleep 0.1
    done
}

# start_issuer LABEL [issuer args...]: sets ISSUER_PID.
start_issuer() {
    local label=$1
    shift
    start "$WORK/issuer-$label.log" "$LOADGEN" issuer --addr "127.0.0.1:$ISSUER" \
        --threads "$ISSUER_THREADS" "$@"
    ISSUER_PID=$STARTED
    wait_port "$ISSUER" "$ISSUER_PID" "$WORK/issuer-$label.log"
}

# start_switch KIND LABEL: a fresh switch on a fresh data directory.
start_switch() {
    local kind=$1 label=$2
    local data=$WORK/data-$label
    mkdir -p "$data"
    write_config "$kind" "$WORK/$label.toml"
    start "$WORK/switch-$label.log" "$SWITCH" --config "$WORK/$label.toml" \
        --iso-addr "127.0.0.1:$ISO" --frame-addr "127.0.0.1:$FRAME" \
        --http-addr "127.0.0.1:$HTTP" --data-dir "$data" --journal-ack "$SWITCH_ACK"
    SWITCH_PID=$STARTED
    wait_port "$ISO" "$SWITCH_PID" "$WORK/switch-$label.log"
    wait_port "$HTTP" "$SWITCH_PID" "$WORK/switch-$label.log"
    [[ $kind == forwarded ]] && wait_linked
    return 0
}

stop_switch() {
    stop "$SWITCH_PID"
    rm -rf "$WORK/data-$1"
}

# loadgen_run LABEL [loadgen args...]: the JSON summary into $WORK/LABEL.json.
loadgen_run() {
    local label=$1
    shift
    "$LOADGEN" run --addr "127.0.0.1:$ISO" --target switch --mix auth=1 --label "$label" \
        --duration-s "$DURATION_S" --threads "$LOADGEN_THREADS" -q \
        --metrics-url "http://127.0.0.1:$HTTP/metrics" "$@" \
        >"$WORK/$label.json" 2>"$WORK/$label.err"
}

# The simulator's last counters line (printed when it stops).
issuer_0100() {
    grep '^{' "$WORK/issuer-$1.log" | tail -n 1 | jq -r '.requests_0100 // "?"'
}

# One counter of the simulator's last line.
issuer_count() {
    local v
    v=$({ grep '^{' "$WORK/issuer-$1.log" || true; } | tail -n 1 | jq -r ".$2 // 0")
    echo "${v:-0}"
}

row() {
    local label=$1 extra=${2:-}
    jq -r --arg extra "$extra" '"\(.label)\t\(.throughput_per_s|floor)/s\tp50 \(.latency.p50_us|floor) us\tp99 \(.latency.p99_us|floor) us\tp99.9 \(.latency.p999_us|floor) us\tanswered \(.answered)\tmismatches \(.mismatches_total)\(if $extra == "" then "" else "\t" + $extra end)"' \
        "$WORK/$label.json"
}

c=${CLOSED%x*}
d=${CLOSED#*x}
summary=()
if [[ $SKIP_CLOSED != 1 ]]; then
    for round in $(seq 1 "$ROUNDS"); do
        label=fwd-$round
        echo "== round $round: forwarded closed ${c}x${d}" >&2
        start_issuer "$label"
        start_switch forwarded "$label"
        loadgen_run "$label" -c "$c" -d "$d"
        stop_switch "$label"
        stop "$ISSUER_PID"
        row "$label" "issuer 0100s $(issuer_0100 "$label")"

        label=local-$round
        echo "== round $round: local closed ${c}x${d}" >&2
        start_switch local "$label"
        loadgen_run "$label" -c "$c" -d "$d"
        stop_switch "$label"
        row "$label"

        fwd=$(jq -r '.throughput_per_s' "$WORK/fwd-$round.json")
        loc=$(jq -r '.throughput_per_s' "$WORK/local-$round.json")
        summary+=("$(awk -v f="$fwd" -v l="$loc" -v r="$round" \
            'BEGIN { printf "round %d closed %s: forwarded %.0f/s local %.0f/s ratio %.2f", r, "'"$CLOSED"'", f, l, f / l }')")
    done
    printf '%s\n' "${summary[@]}"
fi

if [[ $SKIP_OPEN != 1 ]]; then
    # The simulator on its own at the same rate, loadgen straight at it
    # over as many connections as the switch's links: its own latency,
    # which is not ISSUER_LATENCY_MS (it sleeps on tokio's 1 ms timer).
    label=issuer-open
    echo "== issuer alone open ${RATE}/s, latency ${ISSUER_LATENCY_MS} ms" >&2
    start_issuer "$label" --latency-ms "$ISSUER_LATENCY_MS"
    "$LOADGEN" run --addr "127.0.0.1:$ISSUER" --target peer --label "$label" \
        -c "$UPSTREAM_CONNECTIONS" --rate "$RATE" --duration-s "$DURATION_S" \
        --threads "$LOADGEN_THREADS" -q >"$WORK/$label.json" 2>"$WORK/$label.err"
    stop "$ISSUER_PID"
    row "$label" "late_sends $(jq -r .late_sends "$WORK/$label.json")"

    label=fwd-open
    echo "== forwarded open ${RATE}/s, issuer latency ${ISSUER_LATENCY_MS} ms" >&2
    start_issuer "$label" --latency-ms "$ISSUER_LATENCY_MS"
    start_switch forwarded "$label"
    loadgen_run "$label" -c "$OPEN_CONNECTIONS" --rate "$RATE"
    stop_switch "$label"
    stop "$ISSUER_PID"
    row "$label" "issuer 0100s $(issuer_0100 "$label") late_sends $(jq -r .late_sends "$WORK/$label.json")"
    jq -r --argjson lat "$ISSUER_LATENCY_MS" --slurpfile alone "$WORK/issuer-open.json" \
        '$alone[0].latency as $i | "open \(.rate_per_s)/s forwarded, issuer \($lat) ms: p50 \(.latency.p50_us|floor) p99 \(.latency.p99_us|floor) p99.9 \(.latency.p999_us|floor) us; added over \($lat) ms: p99 \(.latency.p99_us - $lat * 1000|floor) us, p99.9 \(.latency.p999_us - $lat * 1000|floor) us; over the issuer alone (p50 \($i.p50_us|floor) p99 \($i.p99_us|floor) p99.9 \($i.p999_us|floor) us): p50 \(.latency.p50_us - $i.p50_us|floor) p99 \(.latency.p99_us - $i.p99_us|floor) p99.9 \(.latency.p999_us - $i.p999_us|floor) us"' \
        "$WORK/$label.json"

    # The same open loop on a local switch: what loadgen and this box add
    # without any issuer, for reading the forwarded percentiles.
    label=local-open
    echo "== local open ${RATE}/s" >&2
    start_switch local "$label"
    loadgen_run "$label" -c "$OPEN_CONNECTIONS" --rate "$RATE"
    stop_switch "$label"
    row "$label" "late_sends $(jq -r .late_sends "$WORK/$label.json")"
fi

# 3. 10% timeouts: open loop at TIMEOUT_RATE/s through the forwarding switch
#    (timeout_ms TIMEOUT_MS), first with the issuer answering everything,
#    then with it silent for the amounts 100..339 (loadgen draws 100..2499:
#    10% of requests). Checks: every 91 had its reversal delivered (the
#    simulator's 0420 count once the SAF is empty), no answer after a 91
#    (loadgen's mismatches), and the healthy requests' rate against the
#    same share of the run without timeouts.
if [[ $SKIP_TIMEOUTS != 1 ]]; then
    silent=$(seq -s, 100 339)
    for kind in base timeouts; do
        label=fwd-$kind
        echo "== forwarded open ${TIMEOUT_RATE}/s, $kind" >&2
        if [[ $kind == timeouts ]]; then
            start_issuer "$label" --silent-amounts "$silent"
        else
            start_issuer "$label"
        fi
        TIMEOUT_OVERRIDE_MS=$TIMEOUT_MS start_switch forwarded "$label"
        loadgen_run "$label" -c "$OPEN_CONNECTIONS" --rate "$TIMEOUT_RATE"
        # Every 91's reversal reaches the simulator (which stays silent for
        # those amounts, so each is also repeated as 0421 with backoff):
        # its counters line, printed every 10 s, is polled up to
        # REVERSALS_WAIT_S for as many 0420s as 91s.
        n91=$(jq -r '[.codes | to_entries[] | select(.key | endswith("91")) | .value] | add // 0' "$WORK/$label.json")
        waited=0
        while (($(issuer_count "$label" requests_0420) < n91 && waited < ${REVERSALS_WAIT_S:-180})); do
            sleep 5
            waited=$((waited + 5))
        done
        echo "$kind: waited ${waited} s for the reversals" >&2
        stop_switch "$label"
        stop "$ISSUER_PID"
        row "$label"
        n00=$(jq -r '[.codes | to_entries[] | select(.key | endswith("00")) | .value] | add // 0' "$WORK/$label.json")
        echo "$kind: 00 $n00, 91 $n91, reversals at the issuer $(issuer_count "$label" requests_0420), answers after their 91 or unmatched $(jq -r '.mismatches.unmatched + .mismatches.wrong_mti + .mismatches.lost' "$WORK/$label.json"), other codes $(jq -r '.mismatches.unexpected_code' "$WORK/$label.json") (the 91s)"
    done
fi
