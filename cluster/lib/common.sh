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

# python3 with numpy, which runs the project's W1 reference (reference/w1.py). As root it installs
# what is missing: Debian's python3-numpy for the system python3 (or python3 itself), pip's numpy
# for another python3 on PATH (pyenv, a venv); otherwise it says exactly what to run.
ensure_numpy() {
    local python
    python="$(command -v python3 || true)"
    if [ -n "$python" ] && "$python" -c 'import numpy' 2>/dev/null; then return 0; fi
    local install
    if [ -z "$python" ] || [ "$python" = /usr/bin/python3 ]; then
        install="apt-get install -y python3 python3-numpy"
    else
        install="$python -m pip install numpy"
    fi
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing numpy for the W1 reference ($install)" >&2
        if [ -z "$python" ] || [ "$python" = /usr/bin/python3 ]; then
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-numpy >/dev/null
        else
            "$python" -m pip install -q numpy >&2
        fi
        python="$(command -v python3 || true)"
        if [ -n "$python" ] && "$python" -c 'import numpy' 2>/dev/null; then return 0; fi
    fi
    echo "error: ${python:-python3} cannot import numpy, which the W1 reference (reference/w1.py) needs; install it with: ${install}" >&2
    exit 1
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
    CONTROLLER_ARGS=("$@")
}

# SIGKILL the controller and start it again at once with the same arguments on the same address
# (workers dial it; the dashboard keeps its address too): it continues from its journal. Sets
# CONTROLLER; the log is appended to.
restart_controller() {
    local http=() code=0
    kill -KILL "$CONTROLLER"
    wait "$CONTROLLER" 2>/dev/null || code=$?
    [ "$code" -eq 137 ] || { echo "error: the controller exited with status $code, not 137 (SIGKILL)" >&2; exit 1; }
    local args=(${CONTROLLER_ARGS[@]+"${CONTROLLER_ARGS[@]}"})
    if [ -s "$WORK/controller/http.address" ]; then
        # The same dashboard address as before, instead of the port 0 it was started with.
        local i
        for i in "${!args[@]}"; do [ "${args[$i]}" = --http ] && args[$((i + 1))]="$(cat "$WORK/controller/http.address")"; done
    fi
    set -- ${args[@]+"${args[@]}"}
    "$E" controller --listen "$ADDRESS" --data-dir "$WORK/controller" "$@" >>"$WORK/controller.out" 2>>"$WORK/controller.log" &
    CONTROLLER=$!
    PIDS+=("$CONTROLLER")
}

# Starts worker-1…worker-COUNT with one new token. Sets WORKER_PIDS and WORKER_NAMES (same order).
join_workers() {  # COUNT [extra join arguments…]
    local count="$1"; shift
    local token hash
    token="$("$E" token create --data-dir "$WORK/controller" --ttl 1h --uses "$count" --description "local cluster" 2>/dev/null)"
    hash="$("$E" certs hash --dir "$WORK/controller")"
    WORKER_PIDS=()
    WORKER_NAMES=()
    for i in $(seq "$count"); do
        join_worker "worker-$i" "$token" "$hash" "$@"
    done
}

# Starts one worker NAME (data dir $WORK/NAME, log $WORK/NAME.log) with TOKEN and the CA HASH;
# appends it to WORKER_PIDS, WORKER_NAMES and PIDS.
join_worker() {  # NAME TOKEN HASH [extra join arguments…]
    local name="$1" token="$2" hash="$3"; shift 3
    "$E" join "$ADDRESS" --token "$token" --ca-hash "$hash" --name "$name" --data-dir "$WORK/$name" \
        --data-listen 127.0.0.1:0 "$@" 2>"$WORK/$name.log" &
    WORKER_PIDS+=($!)
    WORKER_NAMES+=("$name")
    PIDS+=($!)
}

# The pid of worker NAME (from WORKER_NAMES/WORKER_PIDS).
worker_pid() {  # NAME
    local i
    for i in "${!WORKER_NAMES[@]}"; do
        [ "${WORKER_NAMES[$i]}" = "$1" ] && { echo "${WORKER_PIDS[$i]}"; return 0; }
    done
    return 1
}

# Drops worker NAME from WORKER_NAMES/WORKER_PIDS (it was killed and reaped).
forget_worker() {  # NAME
    local i names=() pids=()
    for i in "${!WORKER_NAMES[@]}"; do
        [ "${WORKER_NAMES[$i]}" = "$1" ] && continue
        names+=("${WORKER_NAMES[$i]}"); pids+=("${WORKER_PIDS[$i]}")
    done
    WORKER_NAMES=("${names[@]}"); WORKER_PIDS=("${pids[@]}")
}

# Committed steps so far: the step lines of the controller's ledger (not rollback lines).
committed_steps() {
    local count
    count="$(grep -c '"step":' "$WORK/controller/ledger.jsonl" 2>/dev/null)" || true
    echo "${count:-0}"
}

# Prints a status progress line on stderr (VERBOSE=1): redrawn in place on a terminal, otherwise
# at most one line every 5 s.
_progress_last=0
show_progress() {
    local line now
    [ "${VERBOSE:-0}" = 1 ] || return 0
    line="$("$E" status --data-dir "$WORK/controller" 2>/dev/null | grep -E '^  step ' | sed 's/^  //' || true)"
    [ -n "$line" ] || return 0
    if [ -t 2 ]; then
        printf '\r%s\033[K' "$line" >&2
    else
        now=$(date +%s)
        if [ $((now - _progress_last)) -ge 5 ]; then echo "  $line" >&2; _progress_last=$now; fi
    fi
}

# Ends a progress line drawn in place.
end_progress() {
    if [ "${VERBOSE:-0}" = 1 ] && [ -t 2 ]; then echo >&2; fi
}

# Waits until at least COUNT steps are committed (at most LIMIT seconds, default 600); fails if the
# job stops first or the controller exits.
wait_for_steps() {  # COUNT [LIMIT]
    local count="$1" limit="${2:-600}" polls=0
    while [ "$(committed_steps)" -lt "$count" ]; do
        if ! kill -0 "$CONTROLLER" 2>/dev/null || grep -q 'training stopped' "$WORK/controller.log"; then
            end_progress
            echo "error: training stopped before step $count (log: $WORK/controller.log)" >&2
            return 1
        fi
        polls=$((polls + 1))
        if [ "$polls" -ge $((limit * 10)) ]; then
            end_progress
            echo "error: fewer than $count steps committed after $limit s" >&2
            return 1
        fi
        [ $((polls % 5)) -eq 0 ] && show_progress
        sleep 0.1
    done
    end_progress
}

# Waits until the job is finished or stopped (at most LIMIT seconds, default 1800); shows the
# progress line (show_progress) if VERBOSE=1. Sets PHASE.
wait_for_job() {  # [LIMIT]
    local limit="${1:-1800}" json waiting=0
    PHASE=""
    for _ in $(seq $((limit * 2))); do
        json="$("$E" status --data-dir "$WORK/controller" --json 2>/dev/null || true)"
        PHASE="$(printf '%s' "$json" | grep -o '"phase" : "[a-z]*"' | cut -d'"' -f4)"
        show_progress
        case "$PHASE" in
            finished|stopped) end_progress; return 0 ;;
            waiting) waiting=$((waiting + 1)) ;;
            *) waiting=0 ;;
        esac
        if [ "$waiting" -ge 120 ]; then
            end_progress
            echo "error: the job is still waiting after 60 s: $(printf '%s' "$json" | grep -o '"detail" : "[^"]*"' | cut -d'"' -f4)" >&2
            return 1
        fi
        sleep 0.5
    done
    end_progress
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
