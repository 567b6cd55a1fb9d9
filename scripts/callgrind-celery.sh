#!/usr/bin/env bash
# Instructions per mirrored submission (callgrind, user space) of shadowdiff with the Celery
# shadow, in load-celery.sh's paced setup without a worker: examples/fast_upstream as legacy,
# one proxy thread, every evaluation pushed as a Celery task into the local Redis (database
# 13, a queue of its own) and given up at its 200 ms deadline (so each also costs its last
# GET, its removal from the queue and the janitor's look at its key), and
# `PACE_MS=5 wrk -t1 -c16` with post-unique.lua. Counts repeat for the same binary whatever
# else the machine does, so they compare builds where wall-clock figures cannot.
#
#   scripts/callgrind-celery.sh [SECONDS] [BINARY]
#       SECONDS  length of the counted load (default 5; after a 3 s warm-up)
#       BINARY   default target/release/shadowdiff
#
# The count is reset after the warm-up and dumped 1.5 s after the load, once the last
# deadlines have passed. KEEP=path keeps the profile for callgrind_annotate. Needs valgrind,
# wrk, redis-cli and a Redis on 127.0.0.1:6379.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds=${1:-5}
bin=$(realpath "${2:-target/release/shadowdiff}")
for tool in valgrind callgrind_control wrk redis-cli curl python3; do
    command -v "$tool" >/dev/null || { echo "callgrind-celery.sh: $tool is needed" >&2; exit 1; }
done
cargo build --release --quiet --example fast_upstream
db=13
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    redis-cli -n "$db" flushdb >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
source scripts/load-lib.sh
redis-cli -n "$db" flushdb >/dev/null

target/release/examples/fast_upstream 127.0.0.1:0 >"$work/legacy.out" &
pids+=($!)
for _ in $(seq 100); do grep -q LISTENING "$work/legacy.out" 2>/dev/null && break; sleep 0.05; done
legacy=$(awk '/LISTENING/{print $2}' "$work/legacy.out")
{
    proxy_config "$legacy" 1
    cat <<TOML
[shadow]
kind = "celery"
percent = 100
max_in_flight = 100000
breaker_failures = 0
[shadow.outcome]
deadline_ms = 200
interval_ms = 2000
[shadow.celery]
broker_url = "redis://127.0.0.1:6379/$db"
queue = "callgrind-$$"
task = "evaluate"
max_queue_depth = 100000000
revoke_lost = false
TOML
} >"$work/config.toml"
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" "$bin" serve --config "$work/config.toml" \
    >"$work/shadowdiff.out" 2>"$work/shadowdiff.err" &
pids+=($!)
for _ in $(seq 240); do grep -q LISTENING "$work/shadowdiff.out" 2>/dev/null && break; sleep 0.5; done
proxy=$(grep -o 'proxy=[^ ]*' "$work/shadowdiff.out" | cut -d= -f2)
admin=$(grep -o 'admin=[^ ]*' "$work/shadowdiff.out" | cut -d= -f2)
submissions() {
    curl -s "http://$admin/report.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accounting"]["submissions"])'
}
load() { PACE_MS=5 wrk -t1 -c16 -d"$1" -s scripts/post-unique.lua "http://$proxy/evaluations" >/dev/null; }
load 3s
sleep 2
# The submissions counter is read outside the counted window.
before=$(submissions)
callgrind_control -z >/dev/null
load "${seconds}s"
sleep 1.5
callgrind_control -d >/dev/null
after=$(submissions)
sleep 1
callgrind_per $((after - before)) submission
