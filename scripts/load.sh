#!/usr/bin/env bash
# Throughput and latency of the client's path: direct to a fast upstream, through
# shadowdiff without mirroring, through shadowdiff mirroring every evaluation to an HTTP
# shadow, and through nginx's `mirror` module doing the same, all in one run on this
# machine (wrk shares it). Only 127.0.0.1 is targeted.
#
#   scripts/load.sh [seconds] [connections]        (defaults: 10 s, 64 connections)
#   SHADOWDIFF_THREADS=N sets shadowdiff's runtime threads (default 1: the load tool
#   needs the other core)
#
# Prints one Markdown table row per target: requests/s, p50 and p99 latency, and for
# shadowdiff the CPU time it spent per request (from /proc, user + system).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds=${1:-10}
connections=${2:-64}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

source scripts/load-lib.sh
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin shadowdiff --example fast_upstream


start legacy target/release/examples/fast_upstream 127.0.0.1:0
start shadow target/release/examples/fast_upstream 127.0.0.1:0
legacy=$(awk '/LISTENING/{print $2}' "$work/legacy.out")
shadow=$(awk '/LISTENING/{print $2}' "$work/shadow.out")

config() { # percent
    proxy_config "$legacy" "${SHADOWDIFF_THREADS:-1}"
    cat <<TOML
[shadow]
percent = $1
max_in_flight = 10000
[shadow.http]
url = "http://$shadow"
[shadow.outcome]
mode = "response"
TOML
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # label, url, [pid of the proxy whose CPU to count]
    local label=$1 url=$2 pid=${3:-} before=0 after=0
    [[ -n $pid ]] && before=$(cpu_ticks "$pid")
    wrk -t1 -c"$connections" -d"${seconds}s" --latency -s scripts/post-unique.lua "$url/evaluations" >"$work/wrk.txt"
    [[ -n $pid ]] && after=$(cpu_ticks "$pid")
    local rps p50 p99 requests cpu="-"
    rps=$(awk '/Requests\/sec/{print $2}' "$work/wrk.txt")
    p50=$(awk '$1=="50%"{print $2}' "$work/wrk.txt")
    p99=$(awk '$1=="99%"{print $2}' "$work/wrk.txt")
    requests=$(awk '/requests in/{print $1}' "$work/wrk.txt")
    if [[ -n $pid ]]; then
        cpu=$(awk -v t=$((after - before)) -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.1f", t / hz * 1e6 / n}')
    fi
    printf '| %s | %s | %s | %s | %s |\n' "$label" "$rps" "$p50" "$p99" "$cpu"
}

echo "| target | requests/s | p50 | p99 | proxy CPU µs/request |"
echo "|---|---|---|---|---|"
measure "direct to the upstream" "http://$legacy"

for percent in 0 100; do
    config "$percent" >"$work/sd$percent.toml"
    start "sd$percent" target/release/shadowdiff serve --config "$work/sd$percent.toml"
    address=$(grep -o 'proxy=[^ ]*' "$work/sd$percent.out" | cut -d= -f2)
    admin=$(grep -o 'admin=[^ ]*' "$work/sd$percent.out" | cut -d= -f2)
    label="shadowdiff, no mirroring"
    [[ $percent == 100 ]] && label="shadowdiff, mirroring every evaluation"
    measure "$label" "http://$address" "$(cat "$work/sd$percent.pid")"
    sleep 1
    curl -s "http://$admin/report.json" >"$work/report$percent.json"
    kill "$(cat "$work/sd$percent.pid")"
done
python3 - "$work/report100.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
a = r["accounting"]
print(f"\nmirroring run: {a['submissions']} submissions, {a['judged']} judged, {a['pending']} pending, "
      f"not mirrored {a['not_mirrored']}; verdicts {r['totals']}")
PY

if command -v nginx >/dev/null; then
    cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    upstream legacy { server $legacy; keepalive 128; }
    upstream shadow { server $shadow; keepalive 128; }
    server {
        listen 127.0.0.1:18089;
        location / {
            mirror /mirror;
            mirror_request_body on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://legacy;
        }
        location = /mirror {
            internal;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://shadow\$request_uri;
        }
    }
}
NGINX
    nginx -c "$work/nginx.conf" -p "$work" &
    pids+=($!)
    sleep 0.5
    # The master only supervises; its one worker does the proxying.
    measure "nginx mirror module (1 worker)" "http://127.0.0.1:18089" "$(pgrep -P "$!" | head -1)"
fi
