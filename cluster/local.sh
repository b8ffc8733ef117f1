#!/usr/bin/env bash
# The main job: a local cluster with the embedded defaults. Creates the CA and a token, starts a
# controller and N workers (default 3) on loopback, waits until all are members, prints the
# status, then stops everything cleanly (workers leave, the controller shuts down) and checks
# that every process exited with status 0.
#
#   cluster/local.sh [--workers N] [--keep DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib/common.sh

WORKERS=3
KEEP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) WORKERS="$2"; shift 2 ;;
        --keep) KEEP="$2"; shift 2 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "error: unknown argument '$1'; usage: cluster/local.sh [--workers N] [--keep DIR]" >&2; exit 2 ;;
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

echo "== certificates" >&2
"$E" certs init --dir "$WORK/controller" --force
HASH="$("$E" certs hash --dir "$WORK/controller")"

echo "== controller" >&2
"$E" controller --listen 127.0.0.1:0 --data-dir "$WORK/controller" >"$WORK/controller.out" 2>"$WORK/controller.log" &
CONTROLLER=$!
PIDS+=("$CONTROLLER")
for _ in $(seq 100); do [ -s "$WORK/controller/controller.address" ] && break; sleep 0.1; done
[ -s "$WORK/controller/controller.address" ] || { cat "$WORK/controller.log" >&2; echo "error: the controller did not start" >&2; exit 1; }
ADDRESS="$(cat "$WORK/controller/controller.address")"
echo "controller at $ADDRESS (log: $WORK/controller.log)" >&2

TOKEN="$("$E" token create --data-dir "$WORK/controller" --ttl 1h --uses "$WORKERS" --description "local cluster" 2>/dev/null)"
echo "== $WORKERS workers join with token ${TOKEN%%.*}" >&2
WORKER_PIDS=()
for i in $(seq "$WORKERS"); do
    "$E" join "$ADDRESS" --token "$TOKEN" --ca-hash "$HASH" --name "worker-$i" --data-dir "$WORK/worker-$i" 2>"$WORK/worker-$i.log" &
    WORKER_PIDS+=($!)
    PIDS+=($!)
done

alive=0
for _ in $(seq 300); do
    alive="$("$E" status --data-dir "$WORK/controller" --json 2>/dev/null | grep -c '"state" : "alive"' || true)"
    [ "$alive" -ge "$WORKERS" ] && break
    sleep 0.2
done
"$E" status --data-dir "$WORK/controller"
if [ "$alive" -lt "$WORKERS" ]; then
    echo "error: only $alive of $WORKERS workers became members; logs are in $WORK" >&2
    KEEP="$WORK"
    exit 1
fi

echo "== stopping: workers leave, then the controller shuts down" >&2
status=0
for pid in "${WORKER_PIDS[@]}"; do kill -TERM "$pid"; done
for pid in "${WORKER_PIDS[@]}"; do wait "$pid" || { echo "worker $pid exited with status $?" >&2; status=1; }; done
kill -TERM "$CONTROLLER"
wait "$CONTROLLER" || { echo "controller exited with status $?" >&2; status=1; }
PIDS=()

echo "== membership events ($WORK/controller/events.jsonl)" >&2
grep -o '"event":"[a-z]*"' "$WORK/controller/events.jsonl" | sort | uniq -c >&2
[ "$status" -eq 0 ] && echo "local cluster: $WORKERS workers joined, reported alive, left cleanly" || exit 1
