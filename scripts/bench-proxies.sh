#!/usr/bin/env bash
# shadowdiff beside nginx and Envoy, with the shared mirroring-proxies harness
# (../shared/bench/mirror-proxies, see its README): three back-to-back invocations of its
# run.sh, because it runs one PROXY_CMD per invocation, then one combined summary.
#
#   scripts/bench-proxies.sh            # about 9 minutes; DURATION=, REPS=, WORKERS= override
#
# 1. nginx keep-alive proxy (a_ka), nginx mirror (c), Envoy mirror, shadowdiff mirroring
#    and comparing every evaluation, plus the harness's shadow-delivery check;
# 2. shadowdiff with mirroring off (`shadowdiff.sh W 0`);
# 3. shadowdiff mirroring to a stalled shadow (STALLED_SHADOW=1: a socket that never answers).
# Needs a release build (cargo build --release) and the harness's setup.sh once.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
harness=${HARNESS:-$repo/../shared/bench/mirror-proxies}
[[ -x "$harness/run.sh" ]] || { echo "no harness at $harness (set HARNESS=)" >&2; exit 1; }
[[ -x target/release/shadowdiff ]] || { echo "build first: cargo build --release" >&2; exit 1; }
export DURATION=${DURATION:-10s} REPS=${REPS:-2} WORKERS=${WORKERS:-"1 2"}
out=${OUT:-${XDG_CACHE_HOME:-$HOME/.cache}/mirror-bench-results/shadowdiff-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"

PROXY_CMD="$harness/shadowdiff.sh {workers}" PROXY_LABEL="shadowdiff-mirroring" \
    VARIANTS="a_ka c envoy cmd" OUT="$out/mirroring" "$harness/run.sh"
PROXY_CMD="$harness/shadowdiff.sh {workers} 0" PROXY_LABEL="shadowdiff-mirroring-off" \
    VARIANTS="cmd" CHECK_DURATION=0 OUT="$out/off" "$harness/run.sh"
PROXY_CMD="$harness/shadowdiff.sh {workers}" PROXY_LABEL="shadowdiff-stalled-shadow" \
    VARIANTS="cmd" STALLED_SHADOW=1 OUT="$out/stalled" "$harness/run.sh"

{
    echo "# shadowdiff beside nginx and Envoy ($(date -u +%Y-%m-%d), scripts/bench-proxies.sh)"
    echo
    for part in mirroring off stalled; do
        echo "## $part"
        echo
        cat "$out/$part/summary.md"
        echo
    done
} >"$out/summary.md"
echo "combined summary: $out/summary.md"
