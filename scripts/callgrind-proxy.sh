#!/usr/bin/env bash
# Instructions per request (callgrind, user space) of shadowdiff in the shared harness's
# setup: its nginx upstreams (../shared/bench/mirror-proxies/conf/upstream.conf, one worker)
# on :18081 and :18082, shadowdiff from its shadowdiff.sh with one proxy thread, and
# `wrk -t1 -c16` with its post.lua. Counts are repeatable for the same binary, whatever else
# the machine is doing, so they compare builds where wall-clock figures cannot.
#
#   scripts/callgrind-proxy.sh [PERCENT] [SECONDS] [BINARY]
#       PERCENT  100 mirrors and compares every request (default), 0 mirrors none
#       SECONDS  length of the counted load (default 10; after a 3 s warm-up)
#       BINARY   default target/release/shadowdiff
#
# The count is reset after the warm-up and dumped after the load. KEEP=path keeps the profile for
# callgrind_annotate. STALLED_SHADOW=1 puts the harness's blackhole.py (reads, never answers)
# in the shadow's place. Needs valgrind, nginx and wrk.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
harness=${HARNESS:-$repo/../shared/bench/mirror-proxies}
percent=${1:-100}
seconds=${2:-10}
bin=$(realpath "${3:-$repo/target/release/shadowdiff}")
for tool in valgrind callgrind_control callgrind_annotate nginx wrk; do
    command -v "$tool" >/dev/null || { echo "callgrind-proxy.sh: $tool is needed" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
source "$repo/scripts/load-lib.sh"
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    [[ -f $work/up/nginx.pid ]] && kill "$(cat "$work/up/nginx.pid")" 2>/dev/null || true
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/up/logs" "$work/up/tmp"
upstreams=$harness/conf/upstream.conf
if [[ -n "${STALLED_SHADOW:-}" ]]; then
    # The harness's stalled shadow: a socket on :18082 that reads and never answers.
    upstreams=$harness/conf/upstream-primary-only.conf
    python3 "$harness/blackhole.py" 18082 >"$work/blackhole.log" 2>&1 &
    pids+=($!)
fi
nginx -p "$work/up" -c "$upstreams" \
    -g "worker_processes 1; pid $work/up/nginx.pid; error_log $work/up/logs/error.log;"
cat >"$work/under-callgrind" <<SH
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$work/callgrind.out "$bin" "\$@"
SH
chmod +x "$work/under-callgrind"
SHADOWDIFF_BIN="$work/under-callgrind" "$harness/shadowdiff.sh" 1 "$percent" >"$work/shadowdiff.log" 2>&1 &
pids+=($!)
admin=http://127.0.0.1:19902
for _ in $(seq 120); do curl -sf "$admin/metrics" >/dev/null 2>&1 && break; sleep 0.5; done
requests() { curl -s "$admin/metrics" | awk '$1=="shadowdiff_proxy_requests_total"{print $2}'; }
url=http://127.0.0.1:18080/evaluations
wrk -t1 -c16 -d3s -s "$harness/post.lua" "$url" >/dev/null
sleep 1
# The request counter is read outside the counted window, which then holds no admin request.
before=$(requests)
callgrind_control -z >/dev/null
wrk -t1 -c16 -d"${seconds}s" -s "$harness/post.lua" "$url" >/dev/null
sleep 1
callgrind_control -d >/dev/null
after=$(requests)
sleep 1
echo -n "percent=$percent "
callgrind_per $((after - before)) request
