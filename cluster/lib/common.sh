# Shared by cluster/local.sh and scripts/test.sh: install what a fresh machine lacks, build.
# Sourced, not run.

# Installs the system packages the build needs (libzstd-dev, libopenblas-dev, pkg-config) as root;
# otherwise says exactly what to install. With the argument `chromium`, also the headless browser
# the dashboard test renders the page with (scripts/test.sh asks for it).
ensure_system_packages() {
    local missing=()
    pkg-config --exists libzstd 2>/dev/null || missing+=(libzstd-dev)
    pkg-config --exists openblas 2>/dev/null || missing+=(libopenblas-dev)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    if [ "${1:-}" = chromium ]; then
        command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} (apt-get)" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "error: missing system packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}

# Builds the package (debug: one build serves the tests and the local cluster).
build_elastic() {
    command -v swift >/dev/null 2>&1 || { echo "error: swift is not on PATH; install Swift 6.1 or later" >&2; exit 1; }
    swift build "$@" >&2
    ELASTIC_BIN="$(swift build --show-bin-path)/elastic"
    export ELASTIC_BIN
}

# A local cluster in $WORK (controller data in $WORK/controller), for the main job and benchmarks.
# Uses $E (the elastic binary). Sets CONTROLLER (pid), WORKER_PIDS, ADDRESS; every pid is also
# appended to PIDS so that an EXIT trap can end them all.
start_controller() {  # [extra controller arguments…]
    "$E" certs init --dir "$WORK/controller" --force >/dev/null
    "$E" controller --listen 127.0.0.1:0 --data-dir "$WORK/controller" "$@" >"$WORK/controller.out" 2>"$WORK/controller.log" &
    CONTROLLER=$!
    PIDS+=("$CONTROLLER")
    for _ in $(seq 100); do [ -s "$WORK/controller/controller.address" ] && break; sleep 0.1; done
    if [ ! -s "$WORK/controller/controller.address" ]; then
        cat "$WORK/controller.log" >&2
        echo "error: the controller did not start (log: $WORK/controller.log)" >&2
        exit 1
    fi
    ADDRESS="$(cat "$WORK/controller/controller.address")"
}

join_workers() {  # COUNT [extra join arguments…]
    local count="$1"; shift
    local token hash
    token="$("$E" token create --data-dir "$WORK/controller" --ttl 1h --uses "$count" --description "local cluster" 2>/dev/null)"
    hash="$("$E" certs hash --dir "$WORK/controller")"
    WORKER_PIDS=()
    for i in $(seq "$count"); do
        "$E" join "$ADDRESS" --token "$token" --ca-hash "$hash" --name "worker-$i" --data-dir "$WORK/worker-$i" \
            --data-listen 127.0.0.1:0 "$@" 2>"$WORK/worker-$i.log" &
        WORKER_PIDS+=($!)
        PIDS+=($!)
    done
}

# Waits until the job is finished or stopped (at most LIMIT seconds, default 1800); prints a
# progress line on stderr when it changes if VERBOSE=1. Sets PHASE.
wait_for_job() {  # [LIMIT]
    local limit="${1:-1800}" json line last="" waiting=0
    PHASE=""
    for _ in $(seq $((limit * 2))); do
        json="$("$E" status --data-dir "$WORK/controller" --json 2>/dev/null || true)"
        PHASE="$(printf '%s' "$json" | grep -o '"phase" : "[a-z]*"' | cut -d'"' -f4)"
        if [ "${VERBOSE:-0}" = 1 ]; then
            line="$("$E" status --data-dir "$WORK/controller" 2>/dev/null | grep -E '^  step ' || true)"
            if [ -n "$line" ] && [ "$line" != "$last" ]; then echo "$line" >&2; last="$line"; fi
        fi
        case "$PHASE" in
            finished|stopped) return 0 ;;
            waiting) waiting=$((waiting + 1)) ;;
            *) waiting=0 ;;
        esac
        if [ "$waiting" -ge 120 ]; then
            echo "error: the job is still waiting after 60 s: $(printf '%s' "$json" | grep -o '"detail" : "[^"]*"' | cut -d'"' -f4)" >&2
            return 1
        fi
        sleep 0.5
    done
}

# SIGTERM to every worker (each leaves), then to the controller; fails if any exit status is not 0.
stop_cluster() {
    local status=0 pid
    for pid in "${WORKER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${WORKER_PIDS[@]}"; do wait "$pid" || { echo "worker $pid exited with status $?" >&2; status=1; }; done
    kill -TERM "$CONTROLLER" 2>/dev/null || true
    wait "$CONTROLLER" || { echo "controller exited with status $?" >&2; status=1; }
    PIDS=()
    return $status
}
