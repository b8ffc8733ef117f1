#!/usr/bin/env bash
# The main job: the whole story on one machine. Generates the W1 data set (once, in data/w1),
# creates the CA and a token, starts a controller with jobs/w1.json (W1, 300 steps, 2 stages x
# 2 replicas, a checkpoint every 100 steps) and N workers (default 4) on loopback. When step
# --kill-at (default 100) has committed it SIGKILLs a slot worker, then joins a new worker
# (another name, another token), and measures from outside, on the controller's ledger: the kill
# to the next committed step, and the join to the first step the newcomer contributes to. It
# follows training to the end, prints the status (plan grid, progress), the final loss next to
# the numpy reference's, the recovery times and the checkpoint listing, checks that the ledger
# holds steps 0..299 exactly once (no committed step lost). Then (at about step 200) it SIGKILLs
# the controller and starts it again with the same command: it continues from its journal,
# workers resume, and the time from the kill to the next commit is printed. It then
# stops everything cleanly (workers
# leave, the controller shuts down) and checks every exit status. The dashboard's address is
# printed when the controller has one (`elastic controller --http`).
#
#   cluster/local.sh [--workers N] [--job FILE] [--kill-at STEP] [--no-faults] [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib/common.sh

WORKERS=4
JOB=jobs/w1.json
KEEP=""
KILL_AT=100
FAULTS=1
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) WORKERS="$2"; shift 2 ;;
        --keep) KEEP="$2"; shift 2 ;;
        --job) JOB="$2"; shift 2 ;;
        --kill-at) KILL_AT="$2"; shift 2 ;;
        --no-faults) FAULTS=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$1'; usage: cluster/local.sh [--workers N] [--job FILE] [--kill-at STEP] [--no-faults] [--keep DIR]" >&2; exit 2 ;;
    esac
done
if [ "$FAULTS" = 1 ] && [ "$WORKERS" -lt 2 ]; then
    echo "error: the kill needs a surviving replica: use --workers 2 or more, or --no-faults" >&2
    exit 2
fi

ensure_system_packages
ensure_numpy
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
STEPS="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["steps"])' "$WORK/job.json")"
LEDGER="$WORK/controller/ledger.jsonl"

# Waits (polling every 20 ms, at most 120 s) for the ledger's answer about the epoch time SINCE.
#   ledger_after SINCE kill  -> "MS STEP GENERATION LOST": the first step committed in a newer
#       generation than the last step committed before SINCE (steps already in flight may commit
#       in the old one meanwhile), and how many committed steps were lost (it must be 0).
#   ledger_after SINCE NODE  -> "MS STEP GENERATION MEMBER_MS": the first step committed in a
#       generation at or after the one NODE joined in, and when NODE became a member.
ledger_after() {  # SINCE kill|NODE
    python3 - "$LEDGER" "$WORK/controller/events.jsonl" "$@" <<'PY'
import json, sys, time
from datetime import datetime
ledger, events, since, what = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
def lines(path):
    try:
        return [json.loads(l) for l in open(path) if l.strip()]
    except (OSError, ValueError):
        return []
def stamp(entry):
    return datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
steps = lambda: [e for e in lines(ledger) if "step" in e]
before = [e for e in steps() if stamp(e) <= since]
deadline = time.time() + 120
joined = None
while time.time() < deadline:
    if what == "kill":
        generation = before[-1]["generation"] if before else 0
        after = [e for e in steps() if stamp(e) > since and e["generation"] > generation]
        if after:
            last = before[-1]["step"] if before else -1
            lost = last + 1 - after[0]["step"] if after[0]["step"] <= last else 0
            print(f"{(stamp(after[0]) - since) * 1000:.0f} {after[0]['step']} {after[0]['generation']} {lost}")
            sys.exit(0)
    else:
        if joined is None:
            joined = next((e for e in lines(events) if e.get("event") == "joined" and e.get("node") == what), None)
        if joined is not None:
            after = [e for e in steps() if e["generation"] >= joined["generation"]]
            if after:
                print(f"{(stamp(after[0]) - since) * 1000:.0f} {after[0]['step']} {after[0]['generation']} {(stamp(joined) - since) * 1000:.0f}")
                sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
PY
}

# The controller serves a dashboard on --http once that option exists (another branch adds it).
HTTP=()
CONTROLLER_HELP="$("$E" controller --help 2>/dev/null || true)"
if printf '%s\n' "$CONTROLLER_HELP" | grep -qE -- '--http( |$)'; then HTTP=(--http 127.0.0.1:0); fi

echo "== controller and $WORKERS workers" >&2
start_controller --job "$WORK/job.json" ${HTTP[@]+"${HTTP[@]}"}
echo "controller at $ADDRESS (log: $WORK/controller.log)" >&2
join_workers "$WORKERS"
if [ ${#HTTP[@]} -gt 0 ]; then
    for _ in $(seq 50); do [ -s "$WORK/controller/http.address" ] && break; sleep 0.1; done
    if [ -s "$WORK/controller/http.address" ]; then
        echo "dashboard: http://$(cat "$WORK/controller/http.address")/" >&2
    fi
fi

NAME="$(grep -o '"name": *"[^"]*"' "$JOB" | head -1 | cut -d'"' -f4)"
echo "== training $NAME, $STEPS steps (follow: tail -f $WORK/controller.log)" >&2
KILL_LINE="" JOIN_LINE="" LOST=0
if [ "$FAULTS" = 1 ] && [ "$KILL_AT" -lt "$STEPS" ]; then
    VERBOSE=1 wait_for_steps "$KILL_AT" 900
    # A slot worker whose stage has another replica: the last replica of the last stage.
    VICTIM="$("$E" status --data-dir "$WORK/controller" --json | python3 -c '
import json, sys
grid = (json.load(sys.stdin).get("training") or {}).get("grid") or {}
rows = [s["replicas"] for s in grid.get("stages", []) if len(s["replicas"]) >= 2]
print(rows[-1][-1]["node"] if rows else "")')"
    if [ -z "$VICTIM" ] || ! VICTIM_PID="$(worker_pid "$VICTIM")"; then
        echo "error: no slot worker with a surviving replica to kill (is the plan 2x2?); run with --no-faults" >&2
        exit 1
    fi
    BEFORE="$(committed_steps)"
    kill -KILL "$VICTIM_PID"
    KILLED_AT="$EPOCHREALTIME"
    code=0; wait "$VICTIM_PID" 2>/dev/null || code=$?
    if [ "$code" -ne 137 ]; then echo "error: $VICTIM exited with status $code, not 137 (SIGKILL)" >&2; exit 1; fi
    forget_worker "$VICTIM"
    read -r KILL_MS KILL_STEP KILL_GENERATION LOST < <(ledger_after "$KILLED_AT" kill) || { echo "error: no step committed in a new generation within 120 s of the kill" >&2; KEEP="$WORK"; exit 1; }
    KILL_LINE="SIGKILL $VICTIM (about step $BEFORE) -> re-planned: step $KILL_STEP committed in generation $KILL_GENERATION $KILL_MS ms later; $LOST committed step(s) lost"
    echo "$KILL_LINE" >&2
    if [ "$LOST" -ne 0 ]; then echo "error: the kill lost $LOST committed step(s)" >&2; KEEP="$WORK"; exit 1; fi

    NEWCOMER="worker-$((WORKERS + 1))"
    TOKEN="$("$E" token create --data-dir "$WORK/controller" --ttl 10m --uses 1 --description "newcomer" 2>/dev/null)"
    HASH="$("$E" certs hash --dir "$WORK/controller")"
    JOINED_AT="$EPOCHREALTIME"
    join_worker "$NEWCOMER" "$TOKEN" "$HASH"
    read -r JOIN_MS JOIN_STEP JOIN_GENERATION MEMBER_MS < <(ledger_after "$JOINED_AT" "$NEWCOMER") || { echo "error: $NEWCOMER did not contribute to a step within 120 s" >&2; KEEP="$WORK"; exit 1; }
    SLOT="$("$E" status --data-dir "$WORK/controller" --json | python3 -c '
import json, sys
grid = (json.load(sys.stdin).get("training") or {}).get("grid") or {}
name = sys.argv[1]
slots = ["stage %d replica %d" % (s["stage"], c["replica"]) for s in grid.get("stages", []) for c in s["replicas"] if c["node"] == name]
print(slots[0] if slots else ("a spare" if any(c["node"] == name for c in grid.get("spares", [])) else "not in the plan"))' "$NEWCOMER")"
    JOIN_LINE="elastic join $NEWCOMER (new token) -> a member after $MEMBER_MS ms (bootstrap, capacity probe); step $JOIN_STEP committed in generation $JOIN_GENERATION with it $JOIN_MS ms after the start; it holds $SLOT"
    echo "$JOIN_LINE" >&2

    # The controller dies too: SIGKILL, started again with the same command. It continues
    # from its journal; the workers resume and keep their layers.
    CONTROLLER_AT=$(( KILL_AT + (STEPS - KILL_AT) / 2 ))
    if [ "$CONTROLLER_AT" -lt "$STEPS" ]; then
        VERBOSE=1 wait_for_steps "$CONTROLLER_AT" 900
        BEFORE="$(committed_steps)"
        RESTARTED_AT="$EPOCHREALTIME"
        restart_controller
        read -r RESTART_MS RESTART_STEP RESTART_GENERATION RESTART_LOST < <(ledger_after "$RESTARTED_AT" kill) || { echo "error: no step committed within 120 s of the controller's restart" >&2; KEEP="$WORK"; exit 1; }
        # Every worker still runs (same pid) and resumed its incarnation with the new controller.
        ALIVE=0 RESUMED=0
        for i in "${!WORKER_PIDS[@]}"; do
            kill -0 "${WORKER_PIDS[$i]}" 2>/dev/null && ALIVE=$((ALIVE + 1))
            [ "$(grep -c 'resumed as member' "$WORK/${WORKER_NAMES[$i]}.log" || true)" -ge 1 ] && RESUMED=$((RESUMED + 1))
        done
        RESTART_LINE="SIGKILL the controller (about step $BEFORE), restarted with the same command -> step $RESTART_STEP committed in generation $RESTART_GENERATION $RESTART_MS ms after the kill; $RESTART_LOST committed step(s) lost; $ALIVE of ${#WORKER_PIDS[@]} workers still running with their pid, $RESUMED resumed their membership"
        if [ "$ALIVE" -ne "${#WORKER_PIDS[@]}" ] || [ "$RESUMED" -ne "${#WORKER_PIDS[@]}" ]; then echo "error: $RESTART_LINE" >&2; KEEP="$WORK"; exit 1; fi
        echo "$RESTART_LINE" >&2
        if [ "$RESTART_LOST" -ne 0 ]; then echo "error: the controller's restart lost $RESTART_LOST committed step(s)" >&2; KEEP="$WORK"; exit 1; fi
    fi
fi

VERBOSE=1 wait_for_job 1800 || true
"$E" status --data-dir "$WORK/controller"

echo "== loss (this run's curve; the numpy reference on the full W1 in the last column)" >&2
grep -o 'loss curve .*' "$WORK/controller.log" | sed 's/^loss curve /  /' >&2 || true
REFERENCE_LOSS=""
if [ "$NAME" = w1 ]; then
    REFERENCE_LOSS="$(python3 reference/w1.py --steps "$STEPS" | tail -1 | awk '{print $4}')"
fi
python3 - "$LEDGER" "$STEPS" "${REFERENCE_LOSS:-}" <<'PY' >&2
import json, sys
ledger, steps, reference = sys.argv[1], int(sys.argv[2]), sys.argv[3]
final = [json.loads(l) for l in open(ledger) if '"step":' in l][-1]
line = f"  final loss (step {final['step']}): {final['loss']:.6f}"
if reference:
    ref = float(reference)
    line += f"; numpy reference (reference/w1.py, step {steps - 1}): {ref:.6f} ({(final['loss'] - ref) / ref * 100:+.2f} %)"
print(line)
PY

if [ -d "$WORK/checkpoints" ]; then
    echo "== checkpoints ($WORK/checkpoints; restore with: elastic controller … --restore latest)" >&2
    "$E" checkpoint list "$WORK/checkpoints" --verify >&2 || true
fi
if [ "$PHASE" != "finished" ]; then
    echo "error: training did not finish (phase: ${PHASE:-unknown}); logs are in $WORK" >&2
    KEEP="$WORK"
    exit 1
fi

# Every step 0…STEPS-1 committed exactly once, in order; a step may repeat only after a
# rollback line (training went back to a checkpoint).
echo "== ledger ($LEDGER)" >&2
python3 - "$LEDGER" "$STEPS" <<'PY' >&2
import json, sys
ledger, steps = sys.argv[1], int(sys.argv[2])
expected, rollbacks, committed = 0, 0, 0
for number, text in enumerate(open(ledger), 1):
    entry = json.loads(text)
    if "rollbackTo" in entry:
        rollbacks += 1
        expected = entry["rollbackTo"]
        continue
    if entry["step"] != expected:
        sys.exit(f"error: ledger line {number} commits step {entry['step']}, expected {expected} (a step lost or committed twice)")
    expected += 1
    committed += 1
if expected != steps:
    sys.exit(f"error: the ledger ends at step {expected - 1}, expected {steps - 1}")
print(f"  steps 0..{steps - 1} committed in order, each once ({committed} lines, {rollbacks} rollback(s))")
PY

echo "== stopping: workers leave, then the controller shuts down" >&2
status=0
stop_cluster || status=1

echo "== membership events ($WORK/controller/events.jsonl)" >&2
grep -o '"event":"[a-z]*"' "$WORK/controller/events.jsonl" | sort | uniq -c >&2
if [ -n "$KILL_LINE" ]; then
    echo "== recovery, measured outside the controller (its ledger's timestamps)" >&2
    echo "  $KILL_LINE" >&2
    echo "  $JOIN_LINE" >&2
    [ -z "${RESTART_LINE:-}" ] || echo "  $RESTART_LINE" >&2
fi
[ "$status" -eq 0 ] || exit 1
if [ "$FAULTS" = 1 ] && [ -n "$KILL_LINE" ]; then
    echo "local cluster: $WORKERS workers trained $JOB to the end through a SIGKILL ($KILL_MS ms to the next commit, $LOST steps lost), a join ($JOIN_MS ms to contributing)${RESTART_MS:+ and a controller SIGKILL + restart ($RESTART_MS ms to the next commit)}; all left cleanly"
else
    echo "local cluster: $WORKERS workers joined, trained $JOB to the end, left cleanly"
fi
