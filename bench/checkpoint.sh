#!/usr/bin/env bash
# End-to-end checkpoint benchmark (release build, the real CLI and a local cluster): trains W1 and
# W2 (W1 with 8 hidden layers of 2048) with and without checkpoints, then measures their final
# checkpoints against the zstd CLI on the same bytes, in the same run:
#   1. compressed size ratio: ours with and without the byte-plane shuffle, `zstd -T1 -<level>` on
#      the raw bytes and on the shuffled bytes;
#   2. write throughput (`checkpoint copy`: encode + write + fsync + commit) ÷ `zstd -T1 -<level>`
#      (with and without an fsync of its output; on disk and on tmpfs);
#   3. restore throughput (a worker's `--restore`, and `checkpoint verify`) vs `zstd -d -T1`;
#   4. the training stall per checkpoint as a fraction of a step (all cores training, and 1×1);
#   5. what-if: the same write as a separate process at normal vs idle (SCHED_IDLE) priority.
# Absolute figures drift on a shared machine; the ratios against the same run's baselines are the
# figures. bench/checkpoint/README.md says what each number means.
#
#   bench/checkpoint.sh [quick] [--level L] [--keep-work]
#   ELASTIC_BIN=path/to/elastic bench/checkpoint.sh …     # skip the release build
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib/common.sh
HERE="$PWD/bench/checkpoint"
MEASURE="$HERE/measure.py"

MODE=full
LEVEL=1
KEEP_WORK=0
while [ $# -gt 0 ]; do
    case "$1" in
        quick) MODE=quick; shift ;;
        --level) LEVEL="$2"; shift 2 ;;
        --keep-work) KEEP_WORK=1; shift ;;
        *) echo "error: unknown argument '$1'; usage: bench/checkpoint.sh [quick] [--level L] [--keep-work]" >&2; exit 2 ;;
    esac
done

# W1: data parallel over both cores (one writer); W2: two pipeline stages (two writers in
# parallel), one matrix thread per worker: either way the workers use the whole 2-core machine,
# so the background write competes with training as it would on a busy node.
SAMPLES=16384
W1_PLAN=1x2; W1_EVERY=20
W2_PLAN=2x1; W2_EVERY=10
# Then the same jobs on one worker (1x1, one matrix thread), which leaves the second core to the
# writer: what a checkpoint costs the step when it does not have to share a core.
if [ "$MODE" = quick ]; then
    W1_STEPS=200; W1_PAIRS=1; W2_STEPS=30; W2_PAIRS=1; W2_SPARE_STEPS=0; W2_INJECT_STEPS=0
    REPEATS=2; READ_REPEATS=5; RESTORES=1
else
    W1_STEPS=400; W1_PAIRS=2; W2_STEPS=50; W2_PAIRS=1; W2_SPARE_STEPS=40; W2_INJECT_STEPS=80
    REPEATS=5; READ_REPEATS=9; RESTORES=3
fi

command -v zstd >/dev/null 2>&1 || { echo "error: the zstd CLI is missing (apt-get install -y zstd)" >&2; exit 1; }
python3 -c "import numpy" 2>/dev/null || { echo "error: python3 needs numpy (apt-get install -y python3-numpy)" >&2; exit 1; }
if [ -n "${ELASTIC_BIN:-}" ]; then
    E="$ELASTIC_BIN"
else
    ensure_system_packages
    echo "== release build (.build-release)" >&2
    swift build -c release --product elastic --scratch-path .build-release >&2
    E="$(swift build -c release --scratch-path .build-release --show-bin-path)/elastic"
fi

STARTED=$(date +%s)
ROOT_WORK="$(mktemp -d /tmp/elastic-ckbench.XXXXXX)"
SHM=""
if [ -d /dev/shm ] && [ -w /dev/shm ]; then SHM="$(mktemp -d /dev/shm/elastic-ckbench.XXXXXX)"; fi
RESULTS="$ROOT_WORK/results"; mkdir -p "$RESULTS"
# A private copy of the binary: another build of .build-release during the run must not change it.
cp "$E" "$ROOT_WORK/elastic"; E="$ROOT_WORK/elastic"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ "$KEEP_WORK" = 1 ]; then
        echo "kept $ROOT_WORK${SHM:+ and $SHM}" >&2
    else
        rm -rf "$ROOT_WORK"
        [ -z "$SHM" ] || rm -rf "$SHM"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
WORK="$ROOT_WORK"

"$E" data generate w1 --out "$ROOT_WORK/data" --samples "$SAMPLES" >/dev/null 2>&1

# Waits until the job's phase is "finished" (0), or a process of the cluster is gone or the time
# is up (1). Sets PHASE.
wait_finished() {  # LIMIT_SECONDS
    local deadline=$(( $(date +%s) + $1 )) pid
    PHASE=""
    while [ "$(date +%s)" -lt "$deadline" ]; do
        PHASE="$("$E" status --data-dir "$WORK/controller" --json 2>/dev/null | grep -o '"phase" : "[a-z]*"' | cut -d'"' -f4 || true)"
        [ "$PHASE" = finished ] && return 0
        for pid in "$CONTROLLER" "${WORKER_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "process $pid of the cluster in $WORK is gone (phase '$PHASE')" >&2; return 1; }
        done
        sleep 0.25
    done
    echo "timed out after $1 s in phase '$PHASE'" >&2
    return 1
}

# Runs one job on a fresh local cluster in the job file's folder and records its ledger and logs;
# a run that fails (a process gone: the machine is shared) is run again once.
run_job() {  # NAME LABEL TAG JOBFILE [controller arguments…]
    local name="$1" label="$2" tag="$3" job="$4"; shift 4
    local dir; dir="$(dirname "$job")"
    local workers steps checkpointed attempt ok pid
    read -r workers steps checkpointed < <(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
print(j["plan"]["stages"] * j["plan"]["replicas"], j["steps"], 1 if "checkpoint" in j else 0)' "$job")
    for attempt in 1 2; do
        echo "== $name $label $tag: ${workers} worker(s), $steps steps ($(date +%T))$([ "$attempt" = 1 ] || echo ", attempt $attempt")" >&2
        find "$dir" -mindepth 1 -maxdepth 1 ! -name job.json -exec rm -rf {} +
        local saved="$WORK"
        WORK="$dir"
        start_controller --job "$job" "$@"
        join_workers "$workers" --compute-threads 1
        local injector=""
        if [ -n "${INJECT_SUBJECT:-}" ]; then
            python3 "$MEASURE" inject --elastic "$E" --checkpoint "$INJECT_SUBJECT" --work "$dir" --scratch "$ROOT_WORK/offline" \
                --steps "$steps" --every "$INJECT_EVERY" &
            injector=$!
            PIDS+=("$injector")
        fi
        ok=1
        wait_finished 900 || ok=0
        if [ -n "$injector" ]; then
            [ "$ok" = 1 ] || kill -TERM "$injector" 2>/dev/null || true
            wait "$injector" || ok=0
        fi
        # "finished" comes with the last commit; the last step's checkpoint is written after it.
        if [ "$ok" = 1 ] && [ "$checkpointed" = 1 ]; then
            for _ in $(seq 1200); do
                grep -qE "checkpoint of step $steps (committed|abandoned|skipped|could not)" "$WORK/controller.log" && break
                sleep 0.25
            done
        fi
        if [ "$ok" = 1 ]; then
            stop_cluster || true
        else
            for pid in "${WORKER_PIDS[@]}" "$CONTROLLER"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
            PIDS=()
        fi
        WORK="$saved"
        if [ "$ok" = 1 ]; then
            python3 "$MEASURE" run --name "$name" --label "$label" --work "$dir" --job "$job" --out "$RESULTS/run-$name-$label-$tag.json"
            return 0
        fi
        tail -3 "$dir/controller.log" >&2 || true
        echo "warning: $name $label $tag failed; running it again" >&2
    done
    echo "error: $name $label $tag failed twice (logs: $dir)" >&2
    KEEP_WORK=1; exit 1
}

# Training with and without checkpoints, in pairs (off, on), so that both see the same machine.
train_pairs() {  # NAME WORKLOAD PLAN STEPS EVERY PAIRS
    # (join_workers counts with a global `i`: the loop variables here have other names)
    local name="$1" workload="$2" plan="$3" steps="$4" every="$5" pairs="$6" pair tag dir
    for pair in $(seq "$pairs"); do
        tag="$plan-$pair"
        dir="$ROOT_WORK/$name-off-$tag"; mkdir -p "$dir"
        python3 "$MEASURE" job --workload "$workload" --data "$ROOT_WORK/data" --steps "$steps" --plan "$plan" --out "$dir/job.json"
        run_job "$name" off "$tag" "$dir/job.json"
        dir="$ROOT_WORK/$name-on-$tag"; mkdir -p "$dir"
        python3 "$MEASURE" job --workload "$workload" --data "$ROOT_WORK/data" --steps "$steps" --plan "$plan" \
            --every "$every" --keep 2 --directory "$dir/checkpoints" --level "$LEVEL" --out "$dir/job.json"
        run_job "$name" on "$tag" "$dir/job.json"
        SUBJECT="$dir/checkpoints/$(printf 'step-%08d' "$steps")"
    done
    [ -f "$SUBJECT/manifest.json" ] || { echo "error: the final checkpoint $SUBJECT was not committed" >&2; KEEP_WORK=1; exit 1; }
}

# Restores SUBJECT on one worker (1×1, one thread: comparable with `zstd -d -T1`) and trains one step.
restore_runs() {  # NAME WORKLOAD STEPS SUBJECT COUNT
    local name="$1" workload="$2" steps="$3" subject="$4" count="$5" run dir
    for run in $(seq "$count"); do
        dir="$ROOT_WORK/$name-restore-$run"; mkdir -p "$dir"
        python3 "$MEASURE" job --workload "$workload" --data "$ROOT_WORK/data" --steps $((steps + 1)) --plan 1x1 \
            --every 1000000 --keep 1 --directory "$dir/checkpoints" --level "$LEVEL" --out "$dir/job.json"
        run_job "$name" restore "$run" "$dir/job.json" --restore "$subject"
        rm -rf "$dir/checkpoints"
    done
}

offline() {  # NAME SUBJECT
    echo "== $1 offline: ratios, write and read throughput against the zstd CLI ($(date +%T))" >&2
    python3 "$MEASURE" offline --elastic "$E" --name "$1" --checkpoint "$2" --disk "$ROOT_WORK/offline" ${SHM:+--tmpfs "$SHM"} \
        --level "$LEVEL" --repeats "$REPEATS" --read-repeats "$READ_REPEATS" --threads-variant --out "$RESULTS/offline-$1.json"
}

# Training without checkpoints while `checkpoint copy` of the subject runs every EVERY steps as a
# separate process, alternately at normal and at idle priority (what-if for the writer's priority).
inject_run() {  # NAME WORKLOAD PLAN STEPS EVERY SUBJECT
    local dir="$ROOT_WORK/$1-inject-$3"; mkdir -p "$dir" "$ROOT_WORK/offline"
    python3 "$MEASURE" job --workload "$2" --data "$ROOT_WORK/data" --steps "$4" --plan "$3" --out "$dir/job.json"
    INJECT_SUBJECT="$6" INJECT_EVERY="$5" run_job "$1" inject "$3" "$dir/job.json"
}

SPARE_DESC="W1 $W1_STEPS steps"
[ "$W2_SPARE_STEPS" = 0 ] || SPARE_DESC="$SPARE_DESC, W2 $W2_SPARE_STEPS steps"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
train_pairs w1 w1 "$W1_PLAN" "$W1_STEPS" "$W1_EVERY" "$W1_PAIRS"; W1_SUBJECT="$SUBJECT"
train_pairs w2 w2 "$W2_PLAN" "$W2_STEPS" "$W2_EVERY" "$W2_PAIRS"; W2_SUBJECT="$SUBJECT"
train_pairs w1 w1 1x1 "$W1_STEPS" "$W1_EVERY" 1
[ "$W2_SPARE_STEPS" = 0 ] || train_pairs w2 w2 1x1 "$W2_SPARE_STEPS" "$W2_EVERY" 1
offline w1 "$W1_SUBJECT"
offline w2 "$W2_SUBJECT"
restore_runs w1 w1 "$W1_STEPS" "$W1_SUBJECT" "$RESTORES"
restore_runs w2 w2 "$W2_STEPS" "$W2_SUBJECT" "$RESTORES"
inject_run w1 w1 "$W1_PLAN" "$W1_STEPS" "$W1_EVERY" "$W1_SUBJECT"
[ "$W2_INJECT_STEPS" = 0 ] || inject_run w2 w2 "$W2_PLAN" "$W2_INJECT_STEPS" "$W2_EVERY" "$W2_SUBJECT"

echo "checkpoint benchmark ($MODE): $(nproc) cores, $(uname -m), $(zstd --version | grep -o 'v[0-9.]*' | head -1) CLI, load average $LOAD_BEFORE at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "W1 ${W1_PLAN} ${W1_STEPS} steps ×${W1_PAIRS} pairs, checkpoint every ${W1_EVERY}; W2 ${W2_PLAN} ${W2_STEPS} steps ×${W2_PAIRS}, every ${W2_EVERY}; then 1x1: $SPARE_DESC; subjects: the final checkpoints of the last 1x2/2x1 runs; ${SAMPLES} samples; level ${LEVEL}; disk $(df --output=source "$ROOT_WORK" | tail -1)${SHM:+, tmpfs /dev/shm}"
echo
python3 "$MEASURE" report "$RESULTS"/offline-*.json "$RESULTS"/run-*.json
echo
echo "total $(( $(date +%s) - STARTED )) s"
