# Shared by scripts/load.sh and scripts/load-celery.sh (sourced, not run).
# Needs $work (a scratch directory) and the array pids=() in the caller.

# start NAME COMMAND...: runs it in the background, records its pid in $work/NAME.pid and
# waits (up to 5 s) for the LISTENING line it prints on stdout.
start() {
    local name=$1; shift
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    echo $! >"$work/$name.pid"
    for _ in $(seq 100); do grep -q LISTENING "$work/$name.out" 2>/dev/null && break; sleep 0.05; done
}

# proxy_config LEGACY_ADDRESS THREADS: the [proxy], [legacy], [[routes]] and [admin] sections every
# load run shares: ephemeral ports, a deep hand-off, the legacy answer as its outcome.
proxy_config() {
    cat <<TOML
[proxy]
listen = "127.0.0.1:0"
mirror_queue = 100000
worker_threads = $2
[legacy]
url = "http://$1"
[legacy.outcome]
mode = "response"
[[routes]]
method = "POST"
path = "/evaluations"
[admin]
listen = "127.0.0.1:0"
TOML
}
