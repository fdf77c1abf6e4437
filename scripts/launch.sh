#!/usr/bin/env bash
# Starts N nodes of one example on this machine, each with its own log file,
# and stops them all.
#
#   scripts/launch.sh start EXAMPLE N [EXTRA FLAGS...]
#       builds the example (release), starts nodes n1..nN listening on
#       127.0.0.1:$BASE_PORT.. (default 7001), n2..nN seeded with n1, stdin
#       closed (the examples then serve until stopped); logs and pids in
#       target/launch/EXAMPLE/. EXTRA FLAGS go to every node.
#   scripts/launch.sh stop [EXAMPLE]
#       SIGTERM to every node (of EXAMPLE, or of all), which leave the cluster
#       cleanly; SIGKILL after 5 s.
#   scripts/launch.sh status
#       which nodes run, with their log files.
#
# Example: scripts/launch.sh start work_queue 3
#          cargo run --release --example work_queue -- --node client \
#              --seeds 127.0.0.1:7001 --jobs 2000 --members 4
#          scripts/launch.sh stop
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/target/launch"
base_port="${BASE_PORT:-7001}"

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

start() {
    local example="$1" count="$2"
    shift 2
    [[ "$count" =~ ^[0-9]+$ && "$count" -ge 1 ]] || usage
    (cd "$root" && cargo build --release --example "$example")
    local bin="$root/target/release/examples/$example"
    mkdir -p "$dir/$example"
    local seed="127.0.0.1:$base_port"
    for i in $(seq 1 "$count"); do
        local id="n$i" port=$((base_port + i - 1))
        local seeds=()
        [[ "$i" -gt 1 ]] && seeds=(--seeds "$seed")
        "$bin" --node "$id" --listen "127.0.0.1:$port" "${seeds[@]}" "$@" \
            </dev/null >"$dir/$example/$id.log" 2>&1 &
        echo $! >"$dir/$example/$id.pid"
        echo "started $example $id (pid $!) on 127.0.0.1:$port, log $dir/$example/$id.log"
    done
}

stop() {
    local pattern="$dir/${1:-*}/*.pid"
    local pids=()
    for f in $pattern; do
        [[ -f "$f" ]] || continue
        pids+=("$(cat "$f")")
        rm -f "$f"
    done
    [[ ${#pids[@]} -gt 0 ]] || { echo "nothing to stop"; return; }
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "${pids[@]}" 2>/dev/null || { echo "stopped ${#pids[@]} nodes"; return; }
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    echo "stopped ${#pids[@]} nodes (some needed SIGKILL)"
}

status() {
    for f in "$dir"/*/*.pid; do
        [[ -f "$f" ]] || continue
        local pid state
        pid="$(cat "$f")"
        state=$(kill -0 "$pid" 2>/dev/null && echo running || echo gone)
        echo "$(basename "$(dirname "$f")") $(basename "$f" .pid): pid $pid $state, log ${f%.pid}.log"
    done
}

case "${1:-}" in
    start) [[ $# -ge 3 ]] || usage; shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    status) status ;;
    *) usage ;;
esac
