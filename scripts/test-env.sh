#!/usr/bin/env bash
# Prepare what the test suite needs besides Rust; safe to rerun, run or source.
#
#   1. <repo>/.venv with tests/evalstack/requirements.txt installed (Celery);
#      reinstalled only when the requirements file changes (hash marker).
#   2. A Redis server answering on 127.0.0.1:6379; started (and installed
#      with apt-get if absent) when none answers.
#   3. A redis-server binary on the PATH even when a Redis already answers:
#      tests/celery.rs starts a Redis of its own (to stop and restart it).
#   4. promtool (Debian's prometheus package), which tests/deploy.rs runs on the
#      shipped alert rules and on rendered /metrics.
#   5. openssl, with which tests/production_redis.rs makes the CA and certificates
#      of its TLS Redis. Its sentinels are `redis-server --sentinel` (Debian's
#      redis-server binary has both TLS and Sentinel built in; the
#      redis-sentinel package only adds a service around the same binary).
#
# The Rust tests find the worker at <repo>/.venv/bin/celery and the
# interpreter at <repo>/.venv/bin/python; nothing is exported.

_test_env_main() {
    local repo venv requirements marker
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="$repo/.venv"
    requirements="$repo/tests/evalstack/requirements.txt"
    marker="$venv/.evalstack-requirements.sha256"

    ensure_venv "$venv"
    ensure_requirements "$venv" "$requirements" "$marker"
    ensure_redis 127.0.0.1 6379
    ensure_redis_server_binary
    ensure_promtool
    ensure_openssl
}

log() { echo "test-env: $*"; }

# Run a command as root, through sudo when we are not root.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    log "installing $* with apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {
    local venv=$1
    [[ -x $venv/bin/python ]] && return 0
    log "creating $venv"
    if ! python3 -m venv "$venv"; then
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
}

ensure_requirements() {
    local venv=$1 requirements=$2 marker=$3 hash
    hash=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [[ -f $marker && $(<"$marker") == "$hash" ]]; then
        log "python requirements up to date"
        return 0
    fi
    log "installing $(basename "$requirements") into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$hash" >"$marker"
}

# Succeed when a Redis server answers PING on host:port.
redis_answers() {
    local host=$1 port=$2 reply
    if command -v redis-cli >/dev/null; then
        [[ $(redis-cli -h "$host" -p "$port" ping 2>/dev/null) == PONG ]]
        return
    fi
    (
        exec 3<>"/dev/tcp/$host/$port" || exit 1
        printf 'PING\r\n' >&3
        read -r -t 2 reply <&3 && [[ $reply == +PONG* ]]
    ) 2>/dev/null
}

# The tests start redis-server themselves; a Redis that answers is not enough.
ensure_promtool() {
    command -v promtool >/dev/null 2>&1 && return 0
    apt_install --no-install-recommends prometheus
    command -v promtool >/dev/null 2>&1 || { log "promtool missing: install Debian's prometheus package"; return 1; }
}

ensure_openssl() {
    command -v openssl >/dev/null 2>&1 && return 0
    apt_install openssl
    command -v openssl >/dev/null 2>&1 || { log "openssl missing: install Debian's openssl package"; return 1; }
}

ensure_redis_server_binary() {
    command -v redis-server >/dev/null && return 0
    log "no redis-server on the PATH (tests/celery.rs starts one of its own)"
    if command -v apt-get >/dev/null && apt_install redis-server && command -v redis-server >/dev/null; then
        return 0
    fi
    log "install Redis so that redis-server is on the PATH (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), then rerun" >&2
    return 1
}

ensure_redis() {
    local host=$1 port=$2 i
    if redis_answers "$host" "$port"; then
        log "redis answering on $host:$port"
        return 0
    fi
    command -v redis-server >/dev/null || apt_install redis-server
    log "starting redis-server on $host:$port"
    redis-server --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no >/dev/null
    for i in $(seq 50); do
        redis_answers "$host" "$port" && { log "redis answering on $host:$port"; return 0; }
        sleep 0.1
    done
    log "redis did not answer on $host:$port after starting it" >&2
    return 1
}

if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
    # Sourced: keep the caller's shell options and never exit it.
    (set -euo pipefail; _test_env_main)
else
    set -euo pipefail
    _test_env_main
fi
