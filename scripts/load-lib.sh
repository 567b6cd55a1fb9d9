# Shared by the load and callgrind scripts (sourced, not run).
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

# callgrind_per COUNT NOUN: the instructions of the latest callgrind dump in $work, and per
# COUNT NOUNs; the dump is copied to $KEEP when that is set.
callgrind_per() {
    local dump total
    dump=$(ls -t "$work"/callgrind.out.* | head -1)
    total=$(awk '/^(summary|totals):/{print $2}' "$dump" | head -1)
    echo "${2}s=$1 instructions=$total per_$2=$((total / $1))"
    if [[ -n "${KEEP:-}" ]]; then
        cp "$dump" "$KEEP"
        echo "profile: callgrind_annotate --inclusive=yes $KEEP"
    fi
}
