#!/usr/bin/env bash
# The main job: a local cluster with the embedded defaults. Generates the W1 data set (once, in
# data/w1), creates the CA and a token, starts a controller with jobs/w1.json (W1, 300 steps,
# 2 stages x 2 replicas, a checkpoint every 100 steps) and N workers (default 4) on loopback, follows training to the end,
# prints the status and the loss curve next to the numpy reference's, then stops everything
# cleanly (workers leave, the controller shuts down) and checks every exit status.
#
#   cluster/local.sh [--workers N] [--job FILE] [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib/common.sh

WORKERS=4
JOB=jobs/w1.json
KEEP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) WORKERS="$2"; shift 2 ;;
        --keep) KEEP="$2"; shift 2 ;;
        --job) JOB="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$1'; usage: cluster/local.sh [--workers N] [--job FILE] [--keep DIR]" >&2; exit 2 ;;
    esac
done

ensure_system_packages
echo "== building elastic" >&2
build_elastic
E="$ELASTIC_BIN"

if [ -n "$KEEP" ]; then WORK="$KEEP"; mkdir -p "$WORK"; else WORK="$(mktemp -d /tmp/elastic-local.XXXXXX)"; fi
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    [ -n "$KEEP" ] || rm -rf "$WORK"
}
trap cleanup EXIT

if ! "$E" data inspect data/w1 >/dev/null 2>&1; then
    echo "== generating the W1 data set in data/w1" >&2
    "$E" data generate w1 --out data/w1 --shards 4 --force
fi

# This run's copy of the job: the data set by absolute path, checkpoints in the work dir (a
# fresh run must not collide with an earlier run's checkpoints).
python3 - "$JOB" "$WORK/job.json" "$WORK/checkpoints" <<'PY'
import json, os, sys
source, target, checkpoints = sys.argv[1:]
job = json.load(open(source))
job["data"]["path"] = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(source)), job["data"]["path"]))
if "checkpoint" in job:
    job["checkpoint"]["directory"] = checkpoints
json.dump(job, open(target, "w"), indent=2)
PY

echo "== controller and $WORKERS workers" >&2
start_controller --job "$WORK/job.json"
echo "controller at $ADDRESS (log: $WORK/controller.log)" >&2
join_workers "$WORKERS"

echo "== training $(grep -o '"name": *"[^"]*"' "$JOB" | head -1 | cut -d'"' -f4) (follow: tail -f $WORK/controller.log)" >&2
VERBOSE=1 wait_for_job 1800 || true
"$E" status --data-dir "$WORK/controller"
echo "== loss curve (this run; the numpy reference on the full W1: 0: 2.318 · 50: 1.948 · 200: 1.307 · 299: 1.136)" >&2
grep -o 'loss curve .*' "$WORK/controller.log" | sed 's/^loss curve /  /' >&2 || true
if [ -d "$WORK/checkpoints" ]; then
    echo "== checkpoints ($WORK/checkpoints; restore with: elastic controller … --restore latest)" >&2
    "$E" checkpoint list "$WORK/checkpoints" --verify >&2 || true
fi
if [ "$PHASE" != "finished" ]; then
    echo "error: training did not finish (phase: ${PHASE:-unknown}); logs are in $WORK" >&2
    KEEP="$WORK"
    exit 1
fi

echo "== stopping: workers leave, then the controller shuts down" >&2
status=0
stop_cluster || status=1

echo "== membership events ($WORK/controller/events.jsonl)" >&2
grep -o '"event":"[a-z]*"' "$WORK/controller/events.jsonl" | sort | uniq -c >&2
[ "$status" -eq 0 ] && echo "local cluster: $WORKERS workers joined, trained $JOB to the end, left cleanly" || exit 1
