#!/usr/bin/env bash
# The Celery shadow under load: submissions through shadowdiff, each mirrored as a Celery
# task into the local Redis (127.0.0.1:6379, database 14, a queue of its own).
#
#   scripts/load-celery.sh [seconds] [connections]     (defaults: 10 s, 64 connections)
#   SHADOWDIFF_THREADS=N sets shadowdiff's proxy threads (default 2: one thread measured
#   fewer pushes per second here, the Redis round trips want both cores);
#   SHADOWDIFF_BIN=path runs another shadowdiff binary (an older build, to compare)
#
# 1. No worker: how many submissions per second are mirrored (tasks pushed), and the
#    client's latency against the direct path. Results cannot come, so each evaluation
#    is given up after a short deadline (counted lost; revokes off).
# 2. A worker pool running the `trivial` task: judged evaluations per second end to end.
# 3. Paced (PACE_MS, default 5: each connection waits that long between requests, about
#    10,000 requests/s here): the client's p99 direct, through shadowdiff with mirroring
#    off (`percent = 0`), and through shadowdiff mirroring every request into Celery (no
#    worker), at the same pacing: the differences are what the proxy adds and what the
#    Celery shadow adds below saturation.
# 4. The Celery shadow alone, without the HTTP proxy (examples/celery_push.rs): how many
#    evaluations per second it encodes, subscribes and pushes into Redis.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds=${1:-10}
connections=${2:-64}
db=14
queue="load-$$"
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    redis-cli -n "$db" flushdb >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

source scripts/load-lib.sh
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
scripts/test-env.sh >/dev/null
cargo build --release --quiet --bin shadowdiff --example fast_upstream --example celery_push
bin=${SHADOWDIFF_BIN:-target/release/shadowdiff}
redis-cli -n "$db" flushdb >/dev/null


start legacy target/release/examples/fast_upstream 127.0.0.1:0
legacy=$(awk '/LISTENING/{print $2}' "$work/legacy.out")

config() { # task, deadline_ms [percent]
    proxy_config "$legacy" "${SHADOWDIFF_THREADS:-2}"
    cat <<TOML
[shadow]
kind = "celery"
percent = ${3:-100}
max_in_flight = 100000
breaker_failures = 0
[shadow.outcome]
deadline_ms = $2
interval_ms = 2000
[shadow.celery]
broker_url = "redis://127.0.0.1:6379/$db"
queue = "$queue"
task = "$1"
max_queue_depth = 100000000
revoke_lost = false
TOML
}

wrk_row() { # label, url
    wrk -t1 -c"$connections" -d"${seconds}s" --latency -s scripts/post-unique.lua "$2/evaluations" >"$work/wrk.txt"
    printf '| %s | %s | %s | %s |' "$1" "$(awk '/Requests\/sec/{print $2}' "$work/wrk.txt")" \
        "$(awk '$1=="50%"{print $2}' "$work/wrk.txt")" "$(awk '$1=="99%"{print $2}' "$work/wrk.txt")"
}

metric() { # admin address, metric line prefix
    curl -s "http://$1/metrics" | awk -v m="$2" '$1==m{print $2}'
}

echo "| run | client requests/s | p50 | p99 | shadow figure |"
echo "|---|---|---|---|---|"
wrk_row "direct to the upstream" "http://$legacy"; echo " - |"

# check_accounting ADMIN TASK: every submission is accounted for, none skipped. The only
# ones not mirrored may be those wrk cut when it stopped (at most one per connection, as
# `body_incomplete` or `client_error`). Without a worker (TASK evaluate) every task is given
# up at its 200 ms deadline, so once the last deadline has passed every other submission
# must be judged, and judged lost; with one, those not judged yet are pending in the
# backlog. Exits 1 naming the difference.
check_accounting() {
    local waited=0
    while [[ $2 != trivial ]] && (( waited < 50 )); do
        curl -s "http://$1/report.json" | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["accounting"]["pending"] != 0)' && break
        sleep 0.2; waited=$((waited + 1))
    done
    curl -s "http://$1/report.json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
a, t = r["accounting"], r["totals"]
print("    accounting:", json.dumps(a), "totals:", json.dumps(t), file=sys.stderr)
faults = []
skipped, pending, lost = a["not_mirrored"], a["pending"], t["shadow_lost"]
cut = sum(n for reason, n in skipped.items() if reason in ("body_incomplete", "client_error"))
if cut != sum(skipped.values()) or cut > int(sys.argv[2]):
    faults.append(f"not mirrored: {skipped}")
if a["submissions"] != a["judged"] + a["pending"] + a["abandoned"] + cut:
    faults.append("submissions != judged + pending + abandoned + not mirrored")
if sys.argv[1] != "trivial" and (pending or lost != a["judged"]):
    faults.append(f"without a worker every submission is judged lost: pending {pending}, lost {lost}")
if faults:
    sys.exit("load-celery.sh: " + "; ".join(faults))' "$2" "$connections"
}

# off LABEL: shadowdiff with mirroring off (percent = 0) in front of the same upstream;
# every submission must be counted sampled_out, none pushed.
off() {
    config evaluate 200 0 >"$work/off.toml"
    start off "$bin" serve --config "$work/off.toml"
    local proxy admin
    proxy=$(grep -o 'proxy=[^ ]*' "$work/off.out" | cut -d= -f2)
    admin=$(grep -o 'admin=[^ ]*' "$work/off.out" | cut -d= -f2)
    wrk_row "$1" "http://$proxy"; echo " - |"
    curl -s "http://$admin/report.json" | python3 -c '
import json, sys
a = json.load(sys.stdin)["accounting"]
if a["not_mirrored"] != {"sampled_out": a["submissions"]} or a["judged"] or a["pending"]:
    sys.exit(f"load-celery.sh: mirroring off, yet {a}")'
    kill "$(cat "$work/off.pid")"
    sleep 1
}

run() { # name, task, deadline_ms, label
    config "$2" "$3" >"$work/$1.toml"
    start "$1" "$bin" serve --config "$work/$1.toml"
    local proxy admin before after
    proxy=$(grep -o 'proxy=[^ ]*' "$work/$1.out" | cut -d= -f2)
    admin=$(grep -o 'admin=[^ ]*' "$work/$1.out" | cut -d= -f2)
    before=$(metric "$admin" celery_tasks_submitted_total)
    wrk_row "$4" "http://$proxy"
    after=$(metric "$admin" celery_tasks_submitted_total)
    if [[ $2 == trivial ]]; then
        sleep 3
        local judged
        judged=$(curl -s "http://$admin/report.json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["accounting"]["judged"])')
        echo " $(awk -v n="$judged" -v s="$seconds" 'BEGIN{printf "%.0f", n / s}') judged evaluations/s ($judged in ${seconds} s) |"
    else
        echo " $(awk -v n=$((after - before)) -v s="$seconds" 'BEGIN{printf "%.0f", n / s}') tasks pushed/s |"
    fi
    check_accounting "$admin" "$2"
    kill "$(cat "$work/$1.pid")"
    sleep 1
    redis-cli -n "$db" flushdb >/dev/null
}

run noworker evaluate 200 "shadowdiff + Celery shadow, no worker"
export PACE_MS=${PACE_MS:-5}
wrk_row "direct to the upstream, paced (PACE_MS=$PACE_MS)" "http://$legacy"; echo " - |"
off "shadowdiff, mirroring off, paced (PACE_MS=$PACE_MS)"
run paced evaluate 200 "shadowdiff + Celery shadow, no worker, paced (PACE_MS=$PACE_MS)"
unset PACE_MS
SHADOWDIFF_BROKER_URL="redis://127.0.0.1:6379/$db" SHADOWDIFF_RESULT_URL="redis://127.0.0.1:6379/$db" \
    .venv/bin/celery --workdir tests/evalstack -A celery_app worker -Q "$queue" -n "load$$@%h" -P prefork -c 2 \
    --without-mingle --without-gossip -l warning >"$work/worker.log" 2>&1 &
pids+=($!)
sleep 4
run trivial trivial 30000 "shadowdiff + Celery shadow, worker pool (trivial task)"
redis-cli -n "$db" flushdb >/dev/null
echo
echo "Celery shadow alone (examples/celery_push, 200,000 evaluations, 1,024 at a time):"
target/release/examples/celery_push --redis "redis://127.0.0.1:6379/$db" --tasks 200000 --concurrency 1024
