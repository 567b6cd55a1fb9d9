#!/usr/bin/env bash
# Screenshots of the replay report and the live report at desktop (1400 px) and phone
# (420 px) widths, with headless Chromium (Debian's `chromium`, installed if missing).
#
#   scripts/screenshots.sh [OUT_DIR]      # default: target/screenshots
#
# The live report comes from a real `shadowdiff serve` between two stand-in api-services
# (tests/evalstack/legacy_service.py; the HTTP shadow has a shorter run time limit, so slow
# evaluations differ), fed 40 evaluations through the proxy. Everything listens on
# 127.0.0.1 and is stopped at the end.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/target/screenshots}"
mkdir -p "$out"
cd "$repo"

if ! command -v chromium >/dev/null; then
    echo "screenshots: installing chromium with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo build --release --quiet
bin="$repo/target/release/shadowdiff"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

shoot() { # URL WIDTH HEIGHT FILE
    timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$work/chromium" --hide-scrollbars --window-size="$2,$3" \
        --screenshot="$4" "$1" >/dev/null 2>&1
    echo "screenshots: $4"
}

"$bin" replay fixtures/evaluations.jsonl --html "$out/replay.html" >/dev/null
shoot "file://$out/replay.html" 1400 3200 "$out/replay-1400.png"
shoot "file://$out/replay.html" 420 6000 "$out/replay-420.png"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
legacy_port=$(free_port) shadow_port=$(free_port) proxy_port=$(free_port) admin_port=$(free_port)
python3 tests/evalstack/legacy_service.py --port "$legacy_port" --timeout-s 5 >/dev/null &
pids+=($!)
python3 tests/evalstack/legacy_service.py --port "$shadow_port" --timeout-s 0.3 >/dev/null &
pids+=($!)
for port in "$legacy_port" "$shadow_port"; do
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
cat >"$work/live.toml" <<TOML
[proxy]
listen = "127.0.0.1:$proxy_port"
[legacy]
url = "http://127.0.0.1:$legacy_port"
queue_length_url = "/queue"
[legacy.outcome]
interval_ms = 50
[[routes]]
method = "POST"
path = "/evaluations"
[shadow]
kind = "http"
[shadow.http]
url = "http://127.0.0.1:$shadow_port"
[shadow.outcome]
interval_ms = 50
[admin]
listen = "127.0.0.1:$admin_port"
TOML
SHADOWDIFF_LOG=warn "$bin" serve --config "$work/live.toml" &
pids+=($!)
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$admin_port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
for i in $(seq 1 40); do
    case $((i % 8)) in
        0) code='import time; time.sleep(0.5); print("slow")' ;;
        1) code='import sys; print("to stderr", file=sys.stderr); sys.exit(3)' ;;
        *) code="print($i * 7)" ;;
    esac
    body=$(python3 -c 'import json,sys; print(json.dumps({"eval_id": sys.argv[1], "code": sys.argv[2], "language": "python"}))' "shot-$i" "$code")
    curl -fs -X POST "http://127.0.0.1:$proxy_port/evaluations" -d "$body" >/dev/null
done
sleep 6
curl -fs "http://127.0.0.1:$admin_port/report" >"$out/live.html"
shoot "http://127.0.0.1:$admin_port/report" 1400 3200 "$out/live-1400.png"
shoot "http://127.0.0.1:$admin_port/report" 420 6000 "$out/live-420.png"
