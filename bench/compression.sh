#!/usr/bin/env bash
# Gradient-compression benchmark (release build, the real CLI and local clusters): trains W1
# (1 stage × 4 replicas) once per codec — none, fp16, bf16, int8, top-k 1 %, PowerSGD rank 4 —
# and prints, per codec: the gradient bytes each worker sends per step and the ratio to `none`,
# the final loss and its relative difference from `none`, and the step time. Then, as root, the
# same on a 100 Mbit/s link per worker (each worker in a network namespace of its own on a
# bridge, veth pairs shaped with `tc tbf` in both directions, created and removed here; a TCP
# probe checks the shaping first) and each codec's step time against `none` on that link.
# Absolute times drift on a shared machine; the ratios within one run are the figures.
# bench/compression/README.md explains every number.
#
#   bench/compression.sh [quick] [--steps N] [--link-steps N] [--samples N] [--rate 100mbit]
#                        [--codecs none,fp16,bf16,int8,topk,powersgd] [--topk-fraction 0.01]
#                        [--topk-values bf16|float32] [--topk-warmup N] [--topk-warmup-fraction F]
#                        [--powersgd-rank 4] [--powersgd-warmup N] [--minimum-elements N]
#                        [--replicas 4] [--no-link] [--keep-work]
#   ELASTIC_BIN=path/to/elastic bench/compression.sh …     # skip the release build
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib/common.sh
MEASURE="$PWD/bench/compression/measure.py"
USAGE="usage: bench/compression.sh [quick] [--steps N] [--link-steps N] [--samples N] [--rate R] [--codecs LIST] [--topk-fraction F] [--topk-values bf16|float32] [--topk-warmup N] [--topk-warmup-fraction F] [--powersgd-rank R] [--powersgd-warmup N] [--minimum-elements N] [--replicas N] [--no-link] [--keep-work]"

MODE=full
STEPS=""; LINK_STEPS=""; SAMPLES=65536; RATE=100mbit
CODECS=none,fp16,bf16,int8,topk,powersgd
FRACTION=0.01; RANK=4; WARMUP=0
# Settings only passed on when given (measure.py's defaults otherwise).
EXTRA=()
LINK=1; KEEP_WORK=0
while [ $# -gt 0 ]; do
    case "$1" in
        quick) MODE=quick; shift ;;
        --steps) STEPS="$2"; shift 2 ;;
        --link-steps) LINK_STEPS="$2"; shift 2 ;;
        --samples) SAMPLES="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --codecs) CODECS="$2"; shift 2 ;;
        --topk-fraction) FRACTION="$2"; shift 2 ;;
        --powersgd-rank) RANK="$2"; shift 2 ;;
        --powersgd-warmup) WARMUP="$2"; shift 2 ;;
        --topk-values|--topk-warmup|--topk-warmup-fraction|--minimum-elements|--replicas) EXTRA+=("$1" "$2"); shift 2 ;;
        --no-link) LINK=0; shift ;;
        --keep-work) KEEP_WORK=1; shift ;;
        -h|--help) echo "$USAGE"; exit 0 ;;
        *) echo "error: unknown argument '$1'; $USAGE" >&2; exit 2 ;;
    esac
done
# Full: 300 steps on loopback (the issue's run), 100 on the link (the step time settles within a
# few steps and `none` costs ~0.5 s a step there). Quick: 100 and 30.
if [ "$MODE" = quick ]; then : "${STEPS:=100}" "${LINK_STEPS:=30}"; else : "${STEPS:=300}" "${LINK_STEPS:=100}"; fi

if [ "$LINK" = 1 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then
        echo "error: the 100 Mbit/s part needs root, ip and tc (iproute2); run as root or pass --no-link" >&2
        exit 1
    fi
fi
if [ -n "${ELASTIC_BIN:-}" ]; then
    E="$ELASTIC_BIN"
else
    ensure_system_packages
    echo "== release build (.build-release)" >&2
    swift build -c release --product elastic --scratch-path .build-release >&2
    E="$(swift build -c release --scratch-path .build-release --show-bin-path)/elastic"
fi

# What was measured: the commit, and whether Sources differed from it when the binary was built.
SOURCE="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
[ -z "$(git status --porcelain -- Sources Package.swift 2>/dev/null)" ] || SOURCE="$SOURCE with uncommitted changes in Sources"
[ -z "${ELASTIC_BIN:-}" ] || SOURCE="ELASTIC_BIN=$E"
STARTED=$(date +%s)
WORK="$(mktemp -d /tmp/elastic-compbench.XXXXXX)"
HELPER=""
cleanup() {
    if [ -n "$HELPER" ] && kill -0 "$HELPER" 2>/dev/null; then
        # The helper stops its clusters and removes its namespaces on SIGTERM.
        kill -TERM "$HELPER" 2>/dev/null || true
        wait "$HELPER" 2>/dev/null || true
    fi
    if [ -n "$HELPER" ]; then
        # Belt and braces, should the helper have died hard: its controllers and workers run in
        # $WORK/runs (a process keeps a deleted namespace alive), and chaos.Network names what it
        # makes after the helper's pid.
        for proc in /proc/[0-9]*; do
            case "$(readlink "$proc/cwd" 2>/dev/null)" in "$WORK/runs/"*) kill -KILL "${proc#/proc/}" 2>/dev/null || true ;; esac
        done
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^elastic-chaos-$HELPER-" || true); do
            ip netns del "$ns" 2>/dev/null || true
        done
        ip link del "ecb$((HELPER % 100000))" 2>/dev/null || true
    fi
    if [ "$KEEP_WORK" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# Runs the helper in the background and waits for it, so that a SIGTERM to this script is
# handled at once (the trap forwards it) rather than after the helper has finished.
helper() {
    python3 "$MEASURE" "$@" &
    HELPER=$!
    local status=0
    wait "$HELPER" || status=$?
    [ "$status" -eq 0 ] || { KEEP_WORK=1; echo "error: the benchmark failed (status $status); work kept in $WORK" >&2; exit 1; }
}

echo "== W1 data: $SAMPLES samples" >&2
"$E" data generate w1 --out "$WORK/data" --shards 4 --samples "$SAMPLES" >/dev/null 2>&1
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
helper run --label loopback --elastic "$E" --data "$WORK/data" --work "$WORK/runs" --steps "$STEPS" \
    --codecs "$CODECS" --topk-fraction "$FRACTION" --powersgd-rank "$RANK" --powersgd-warmup "$WARMUP" ${EXTRA[@]+"${EXTRA[@]}"} --out "$WORK/loopback.json"
RESULTS=("$WORK/loopback.json")
if [ "$LINK" = 1 ]; then
    helper run --label link --elastic "$E" --data "$WORK/data" --work "$WORK/runs" --steps "$LINK_STEPS" \
        --codecs "$CODECS" --topk-fraction "$FRACTION" --powersgd-rank "$RANK" --powersgd-warmup "$WARMUP" ${EXTRA[@]+"${EXTRA[@]}"} --rate "$RATE" --out "$WORK/link.json"
    RESULTS+=("$WORK/link.json")
fi

echo "compression benchmark ($MODE): $(nproc) cores, $(uname -m), W1 with $SAMPLES samples, batch 256, 1 matrix thread per worker; $SOURCE; load average $LOAD_BEFORE at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo
python3 "$MEASURE" report "${RESULTS[@]}"
echo
echo "total $(( $(date +%s) - STARTED )) s"
