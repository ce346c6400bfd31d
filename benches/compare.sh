#!/usr/bin/env bash
# Runs, in one go, the no-parse echo server (the loopback limit), the
# iso8583_rs approve-all peer and the switch (journal on, once per ack
# mode), each closed loop at maximum throughput and open loop at fixed
# rates, all driven by the same loadgen; prints one table with throughput,
# latency percentiles and the ratios between them (see docs/loadgen.md).
#
# Everything is a variable, e.g.:
#   SWITCH_ACK_FLAG=--journal-ack DURATION_S=10 benches/compare.sh
#   TARGETS="echo peer" RATES="20000" benches/compare.sh
#   TARGETS=forward benches/compare.sh   # issue 19: benches/forward.sh, its own rows
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION_S=${DURATION_S:-5}                 # seconds of sending per run
CLOSED=${CLOSED:-"64x16 16x1"}              # closed loop: CONNECTIONSxDEPTH
RATES=${RATES:-"20000 50000"}               # open loop: requests per second
OPEN_CONNECTIONS=${OPEN_CONNECTIONS:-64}    # open loop connections
LOADGEN_THREADS=${LOADGEN_THREADS:-1}       # loadgen runtime threads
ECHO_THREADS=${ECHO_THREADS:-1}             # echo server runtime threads
TARGETS=${TARGETS:-"echo peer switch"}
BASE_PORT=${BASE_PORT:-17500}
# How to start the switch; the script adds --iso-addr, --frame-addr,
# --http-addr and --data-dir, then the ack mode.
SWITCH_CMD=${SWITCH_CMD:-"cargo run --release -q -p switch --"}
SWITCH_BUILD=${SWITCH_BUILD:-"cargo build --release -q -p switch"}  # empty: no build step
# The journal ack mode setting: with a flag, the switch runs once per mode
# ("$SWITCH_ACK_FLAG durable", "$SWITCH_ACK_FLAG immediate"); empty: once,
# with its default.
SWITCH_ACK_FLAG=${SWITCH_ACK_FLAG---journal-ack}
SWITCH_ACK_MODES=${SWITCH_ACK_MODES:-"durable immediate"}
SWITCH_EXTRA_ARGS=${SWITCH_EXTRA_ARGS:-}
# The switch is compared on authorizations, like the peer; one more closed
# run per mode uses the full default mix (captures, refunds, reversals,
# repeats, malformed frames). SWITCH_FULL_MIX=0 skips it.
SWITCH_MIX=${SWITCH_MIX:-"auth=1"}
SWITCH_FULL_MIX=${SWITCH_FULL_MIX:-1}
SWITCH_START_TIMEOUT_S=${SWITCH_START_TIMEOUT_S:-120}
# Servers run in their own process group but in this script's session, so
# with the kernel's autogroup scheduling (sched_autogroup_enabled) they and
# loadgen share one CPU group; 1 starts each in a session of its own
# (setsid), where autogroup gives it half the machine against loadgen's half
# whenever both want more (see docs/loadgen.md).
SERVERS_OWN_SESSION=${SERVERS_OWN_SESSION:-0}
# These short runs measure the switch's own speed, before memory fills and
# intake follows the archive (benches/soak.sh measures that, on the
# embedded default): the run raises the memory limits so no run reaches
# them (everything else stays the embedded default; the archive drainer
# runs as always).
SWITCH_PAYMENTS_MAX=${SWITCH_PAYMENTS_MAX:-20000000}
SWITCH_IDEMPOTENCY_ENTRIES_MAX=${SWITCH_IDEMPOTENCY_ENTRIES_MAX:-20000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

WORK=$(mktemp -d -t loadgen-compare.XXXXXX)
OUT=${OUT:-$WORK/runs.json}
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "building loadgen" >&2
cargo build --release -q -p loadgen
LOADGEN=$CARGO_TARGET_DIR/release/loadgen

# Starts a command in its own process group (so the group can be stopped,
# cargo run's child included); sets STARTED to its id.
start() {
    local log=$1
    shift
    if [[ $SERVERS_OWN_SESSION == 1 ]]; then
        setsid bash -c 'exec "$@"' bash "$@" >"$log" 2>&1 &
    else
        set -m # job control: the job gets a process group of its own
        "$@" >"$log" 2>&1 &
        set +m
    fi
    STARTED=$!
    PIDS+=("$STARTED")
}

stop() {
    kill -- "-$1" 2>/dev/null || kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

wait_port() {
    local port=$1 timeout_s=$2 pid=$3 log=$4
    local deadline=$((SECONDS + timeout_s))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "server exited before listening on $port; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        if ((SECONDS > deadline)); then
            echo "nothing listening on $port after ${timeout_s}s; log: $log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

# loadgen restarts its STANs every run and sends the wall-clock second as
# F7, so two runs against one switch within the same second would reuse
# message keys with other content, which the switch rightly answers 94.
# Runs against one server are therefore a second apart.
next_second() {
    sleep 1.1
}

# scenarios LABEL TARGET PORT [loadgen args...]
scenarios() {
    local label=$1 target=$2 port=$3
    shift 3
    local cd c d rate
    for cd in $CLOSED; do
        c=${cd%x*}
        d=${cd#*x}
        echo "== $label closed ${c}x${d}" >&2
        next_second
        "$LOADGEN" run --addr "127.0.0.1:$port" --target "$target" --label "$label" \
            -c "$c" -d "$d" --duration-s "$DURATION_S" --threads "$LOADGEN_THREADS" \
            -q --json-out "$OUT" "$@" >/dev/null
    done
    for rate in $RATES; do
        echo "== $label open ${rate}/s" >&2
        next_second
        "$LOADGEN" run --addr "127.0.0.1:$port" --target "$target" --label "$label" \
            -c "$OPEN_CONNECTIONS" --rate "$rate" --duration-s "$DURATION_S" \
            --threads "$LOADGEN_THREADS" -q --json-out "$OUT" "$@" >/dev/null
    done
}

run_echo() {
    local port=$BASE_PORT
    start "$WORK/echo.log" "$LOADGEN" echo --addr "127.0.0.1:$port" --threads "$ECHO_THREADS"
    local pid=$STARTED
    wait_port "$port" 10 "$pid" "$WORK/echo.log"
    scenarios echo echo "$port"
    stop "$pid"
}

run_peer() {
    local port=$((BASE_PORT + 1))
    start "$WORK/peer.log" "$LOADGEN" peer --addr "127.0.0.1:$port"
    local pid=$STARTED
    wait_port "$port" 10 "$pid" "$WORK/peer.log"
    scenarios peer peer "$port"
    stop "$pid"
}

# run_switch LABEL [ack args...]
run_switch() {
    local label=$1
    shift
    local iso=$((BASE_PORT + 10)) frame=$((BASE_PORT + 11)) http=$((BASE_PORT + 12))
    local data=$WORK/data-$label log=$WORK/$label.log
    mkdir -p "$data"
    local config=$WORK/switch.toml
    # shellcheck disable=SC2086 # the command is a word list
    $SWITCH_CMD default-config |
        sed -e "s/^payments_max = .*/payments_max = $SWITCH_PAYMENTS_MAX/" \
            -e "s/^idempotency_entries_max = .*/idempotency_entries_max = $SWITCH_IDEMPOTENCY_ENTRIES_MAX/" \
            >"$config"
    grep -q "^payments_max = $SWITCH_PAYMENTS_MAX$" "$config"
    grep -q "^idempotency_entries_max = $SWITCH_IDEMPOTENCY_ENTRIES_MAX$" "$config"
    # shellcheck disable=SC2086 # the command and extra args are word lists
    start "$log" $SWITCH_CMD --config "$config" --iso-addr "127.0.0.1:$iso" --frame-addr "127.0.0.1:$frame" \
        --http-addr "127.0.0.1:$http" --data-dir "$data" "$@" $SWITCH_EXTRA_ARGS
    local pid=$STARTED
    wait_port "$iso" "$SWITCH_START_TIMEOUT_S" "$pid" "$log"
    local metrics=(--metrics-url "http://127.0.0.1:$http/metrics")
    local mix=()
    [[ -n $SWITCH_MIX ]] && mix=(--mix "$SWITCH_MIX")
    scenarios "$label" switch "$iso" "${metrics[@]}" "${mix[@]}"
    if [[ $SWITCH_FULL_MIX == 1 ]]; then
        local first=${CLOSED%% *}
        echo "== $label-mix closed $first (default mix)" >&2
        next_second
        "$LOADGEN" run --addr "127.0.0.1:$iso" --target switch --label "$label-mix" \
            -c "${first%x*}" -d "${first#*x}" --duration-s "$DURATION_S" \
            --threads "$LOADGEN_THREADS" -q --json-out "$OUT" "${metrics[@]}" >/dev/null
    fi
    stop "$pid"
    rm -rf "$data"
}

for target in $TARGETS; do
    case $target in
        echo) run_echo ;;
        peer) run_peer ;;
        switch)
            if [[ -n $SWITCH_BUILD ]]; then
                echo "building the switch" >&2
                $SWITCH_BUILD
            fi
            if [[ -n $SWITCH_ACK_FLAG ]]; then
                for mode in $SWITCH_ACK_MODES; do
                    run_switch "switch-$mode" "$SWITCH_ACK_FLAG" "$mode"
                done
            else
                run_switch switch
            fi
            ;;
        forward)
            # loadgen -> switch -> issuer simulator against the local
            # authorizer in the same run, open loop through an issuer
            # answering after 1 ms, 10% timeouts: benches/forward.sh, which
            # prints its own rows (its variables pass through).
            DURATION_S=$DURATION_S BASE_PORT=$((BASE_PORT + 100)) benches/forward.sh
            ;;
        *) echo "unknown target $target (echo, peer, switch, forward)" >&2; exit 2 ;;
    esac
done

if [[ -s $OUT ]]; then
    echo >&2
    echo "summaries: $OUT" >&2
    "$LOADGEN" report "$OUT"
else
    # Only forward.sh ran (it cleans up after itself): nothing to keep.
    rmdir "$WORK" 2>/dev/null || true
fi
