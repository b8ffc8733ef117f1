#!/usr/bin/env bash
# Benchmark of the training runtime (release build): W1 for 300 steps on 1 worker (1×1) and on
# 4 workers (2×2 and 1×4), then a ring all-reduce of 64 MiB among 4 ranks over the mutual-TLS
# data plane against a raw TCP ring on loopback measured in the same run. Prints step time,
# samples/s and ratios; absolute times drift on a shared machine, the ratios are the figures.
#
#   bench/train.sh [--steps N] [--mib M]
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib/common.sh

STEPS=300
MIB=64
while [ $# -gt 0 ]; do
    case "$1" in
        --steps) STEPS="$2"; shift 2 ;;
        --mib) MIB="$2"; shift 2 ;;
        *) echo "error: unknown argument '$1'; usage: bench/train.sh [--steps N] [--mib M]" >&2; exit 2 ;;
    esac
done

ensure_system_packages
echo "== release build (.build-release)" >&2
swift build -c release --product elastic --scratch-path .build-release >&2
E="$(swift build -c release --scratch-path .build-release --show-bin-path)/elastic"

WORK="$(mktemp -d /tmp/elastic-bench.XXXXXX)"
PIDS=()
trap 'for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
"$E" data generate w1 --out "$WORK/data" --shards 4 >/dev/null 2>&1

# Seconds between the first and the last committed step in the ledger.
ledger_seconds() {
    python3 - "$1" <<'PY'
import json, sys
from datetime import datetime
rows = [json.loads(line) for line in open(sys.argv[1])]
t = [datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in rows]
print(f"{(t[-1] - t[0]).total_seconds():.3f} {len(rows)} {rows[-1]['loss']:.6f}")
PY
}

printf '%-6s %-8s %12s %12s %12s %10s\n' plan workers "step (ms)" "samples/s" "vs 1×1" "final loss"
base=""
for plan in "1 1" "2 2" "1 4"; do
    set -- $plan
    stages=$1; replicas=$2; workers=$((stages * replicas))
    RUN="$WORK/run-$stages-$replicas"; mkdir -p "$RUN"
    # This run's job: its plan and steps, the data by absolute path, no checkpoints (they are
    # measured by bench/checkpoint.sh).
    python3 - "$RUN/job.json" "$STEPS" "$WORK/data" "$stages" "$replicas" <<'PY'
import json, sys
target, steps, data, stages, replicas = sys.argv[1:]
job = json.load(open("jobs/w1.json"))
job.update({"steps": int(steps), "data": {"path": data}, "plan": {"stages": int(stages), "replicas": int(replicas)}})
job.pop("checkpoint", None)
json.dump(job, open(target, "w"), indent=2)
PY
    WORK_SAVED="$WORK"; WORK="$RUN"
    start_controller --job "$RUN/job.json"
    join_workers "$workers"
    wait_for_job 1800 || true
    stop_cluster || true
    WORK="$WORK_SAVED"
    read -r seconds steps loss < <(ledger_seconds "$RUN/controller/ledger.jsonl")
    step_ms=$(python3 -c "print(f'{1000 * $seconds / max(1, $steps - 1):.1f}')")
    rate=$(python3 -c "print(f'{256 * max(1, $steps - 1) / $seconds:.0f}')")
    [ -n "$base" ] || base="$step_ms"
    ratio=$(python3 -c "print(f'{$base / $step_ms:.2f}x')")
    printf '%-6s %-8s %12s %12s %12s %10s\n' "${stages}x${replicas}" "$workers" "$step_ms" "$rate" "$ratio" "$loss"
done

echo
"$E" bench allreduce --ranks 4 --mib "$MIB" --repeats 3
