# Process helpers the bench scripts source (forward.sh, webhooks.sh). The
# caller keeps PIDS=() and stops them on exit.

# start LOG CMD...: starts CMD in its own process group (so the group can
# be stopped, children included), output to LOG; sets STARTED to its id.
start() {
    local log=$1
    shift
    set -m
    "$@" >"$log" 2>&1 &
    set +m
    STARTED=$!
    PIDS+=("$STARTED")
}

# stop PID: stops its process group (or it) and waits for it.
stop() {
    kill -- "-$1" 2>/dev/null || kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# wait_port PORT PID LOG: until something listens on 127.0.0.1:PORT; exits
# showing LOG when PID ends first or after 60 s.
wait_port() {
    local port=$1 pid=$2 log=$3
    local deadline=$((SECONDS + 60))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS > deadline)); then
            echo "nothing listening on $port; log $log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
}
