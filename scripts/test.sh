#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks, builds, runs every test (Swift Testing).
set -euo pipefail
cd "$(dirname "$0")/.."
source cluster/lib/common.sh
ensure_system_packages chromium
ensure_numpy
start=$(date +%s)
build_elastic --build-tests
echo "build: $(( $(date +%s) - start ))s" >&2
start=$(date +%s)
# Serially: the process tests run real clusters with real heartbeat timeouts, and on two cores
# several of them at once would starve each other's heartbeats.
swift test --skip-build --no-parallel "$@"
echo "tests: $(( $(date +%s) - start ))s" >&2
