#!/usr/bin/env python3
"""Helpers of bench/checkpoint.sh (the end-to-end checkpoint benchmark); not meant to be run alone.

  measure.py job --workload w1|w2 --data DIR --steps N --plan SxR [--every K --directory D --level L] --out FILE
  measure.py offline --elastic E --name w1 --checkpoint CKPT --disk DIR [--tmpfs DIR] --repeats R --out FILE.json
  measure.py run --name w1 --label on|off|restore --work RUNDIR --job FILE --out FILE.json
  measure.py report RESULTS.json…

`offline` measures one committed checkpoint against the zstd CLI on the same bytes (ratios, write
and read throughput); `run` reads one training run's ledger and logs (step times, checkpoint
write times, restore time); `report` prints the tables (bench/checkpoint/README.md explains
every number).
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime

AUTO_SHUFFLE_MINIMUM = 4096  # CheckpointWriteOptions' `.auto`: float tensors of at least 4096 elements
MB = 1e6


def median(values):
    return statistics.median(values) if values else float("nan")


# ---------------------------------------------------------------------------------------------
# job files

def make_job(args):
    here = os.path.dirname(os.path.abspath(__file__))
    job = json.load(open(os.path.join(here, "..", "..", "jobs", "w1.json")))
    if args.workload == "w2":
        job["name"] = "w2"
        job["model"]["layers"] = [{"outputs": 2048, "activation": "relu"}] * 8 + [{"outputs": 10, "activation": "none"}]
    else:
        job["name"] = "w1"
    stages, replicas = (int(x) for x in args.plan.lower().split("x"))
    job.update({"steps": args.steps, "data": {"path": os.path.abspath(args.data)}, "plan": {"stages": stages, "replicas": replicas}})
    if args.every > 0:
        job["checkpoint"] = {"every": args.every, "keep": args.keep, "directory": os.path.abspath(args.directory), "level": args.level, "shuffle": "auto", "threads": 0}
    else:
        job.pop("checkpoint", None)
    json.dump(job, open(args.out, "w"), indent=1)


# ---------------------------------------------------------------------------------------------
# offline: one checkpoint against the zstd CLI

def wall(command, **kwargs):
    """Runs `command`; returns its wall time in seconds (fork to exit)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, **kwargs)
    return time.perf_counter() - start


def manifest_of(elastic, checkpoint):
    out = subprocess.run([elastic, "checkpoint", "inspect", checkpoint, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def tensors_of(manifest):
    for blob in manifest["blobs"]:
        for tensor in blob["tensors"] + blob.get("extras", []):
            yield blob["layer"], tensor


def sizes_of(manifest):
    raw = stored = 0
    shuffled = 0
    for _, tensor in tensors_of(manifest):
        raw += tensor["rawBytes"]
        stored += tensor["storedBytes"]
        shuffled += tensor["rawBytes"] if tensor["transform"] == "byteplane4" else 0
    return raw, stored, shuffled


def timed_copy(elastic, checkpoint, root, level, shuffle, threads):
    """`elastic checkpoint copy`, timed by phase from its progress lines on stderr:
    load (start → "writing …": process start, reading and fully verifying the source),
    write (→ "committing": every blob encoded, written and fsynced, the part record),
    commit (→ exit: manifest, renames, `latest`, each fsynced)."""
    command = [elastic, "checkpoint", "copy", checkpoint, root, "--level", str(level), "--shuffle", shuffle, "--threads", str(threads)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    marks = {}
    for line in process.stderr:
        if line.startswith("writing") and "writing" not in marks:
            marks["writing"] = time.perf_counter()
        elif line.startswith("committing"):
            marks["committing"] = time.perf_counter()
    out = process.stdout.read()
    if process.wait() != 0 or "writing" not in marks or "committing" not in marks:
        raise SystemExit(f"error: {' '.join(command)} failed: {out}")
    end = time.perf_counter()
    return {"load": marks["writing"] - start, "write": marks["committing"] - marks["writing"], "commit": end - marks["committing"], "encode_commit": end - marks["writing"]}


def write_raw_files(elastic, checkpoint, manifest, directory):
    """The checkpoint's raw state as the CLI sees it: every tensor's float32 little-endian bytes in
    manifest order, concatenated (raw.bin), and the same with the byte-plane shuffle applied to
    the tensors `.auto` shuffles (shuffled.bin)."""
    import numpy as np
    npz = os.path.join(directory, "state.npz")
    subprocess.run([elastic, "checkpoint", "export", checkpoint, "--npz", npz], check=True, capture_output=True)
    arrays = np.load(npz)
    raw_path, shuffled_path = os.path.join(directory, "raw.bin"), os.path.join(directory, "shuffled.bin")
    total = 0
    with open(raw_path, "wb") as raw, open(shuffled_path, "wb") as shuffled:
        for layer, tensor in tensors_of(manifest):
            values = np.ascontiguousarray(arrays[f"layer{layer}.{tensor['name']}"], dtype="<f4").reshape(-1)
            data = values.tobytes()
            assert len(data) == tensor["rawBytes"], (layer, tensor["name"], len(data), tensor["rawBytes"])
            raw.write(data)
            if values.size >= AUTO_SHUFFLE_MINIMUM:
                planes = values.view(np.uint8).reshape(-1, 4).T  # plane k = byte k (little-endian) of every element
                shuffled.write(np.ascontiguousarray(planes).tobytes())
            else:
                shuffled.write(data)
            total += len(data)
        raw.flush(); os.fsync(raw.fileno())
        shuffled.flush(); os.fsync(shuffled.fileno())
    os.remove(npz)
    return raw_path, shuffled_path, total


def offline(args):
    elastic, level, name = args.elastic, None, args.name
    manifest = manifest_of(elastic, args.checkpoint)
    level = args.level if args.level is not None else manifest["zstd"]["level"]
    raw_total, stored_auto, shuffled_bytes = sizes_of(manifest)
    work = os.path.join(args.disk, name)
    os.makedirs(work, exist_ok=True)
    raw_path, shuffled_path, exported = write_raw_files(elastic, args.checkpoint, manifest, work)
    assert exported == raw_total
    zstd = ["zstd", "-q", "-f", f"-T{args.zstd_threads}", f"-{level}"]

    # --- ratios: ours with and without the shuffle (same level), the CLI on raw and shuffled bytes
    never_root = os.path.join(work, "never")
    subprocess.run([elastic, "checkpoint", "copy", args.checkpoint, never_root, "--level", str(level), "--shuffle", "never"], check=True, capture_output=True)
    _, stored_never, _ = sizes_of(manifest_of(elastic, never_root))
    shutil.rmtree(never_root)
    if level != manifest["zstd"]["level"]:  # the subject was written at another level: rewrite it at this one
        auto_root = os.path.join(work, "auto")
        subprocess.run([elastic, "checkpoint", "copy", args.checkpoint, auto_root, "--level", str(level)], check=True, capture_output=True)
        _, stored_auto, _ = sizes_of(manifest_of(elastic, auto_root))
        shutil.rmtree(auto_root)
    cli = {}
    for label, path in (("raw", raw_path), ("shuffled", shuffled_path)):
        subprocess.run(zstd + [path, "-o", path + ".zst"], check=True)
        cli[label] = os.path.getsize(path + ".zst")

    # --- what the snapshot costs the step today: the update after the snapshot writes into arrays
    # the writer still holds, so they are copied (copy-on-write) into fresh memory; a numpy copy
    # of the raw state into a fresh allocation does the same work (page faults included)
    import numpy as np
    try:  # numpy asks for transparent huge pages, Swift arrays do not: fault 4 KiB pages like them
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:
        from numpy.core.multiarray import _set_madvise_hugepage
    _set_madvise_hugepage(False)
    # one allocation per tensor, as the arrays are; glibc recycles freed chunks below its mmap
    # threshold (up to 32 MiB), so the median of repeated copies is the steady state of training
    state = np.fromfile(raw_path, dtype=np.uint8)
    pieces, offset = [], 0
    for _, tensor in tensors_of(manifest):
        pieces.append(state[offset:offset + tensor["rawBytes"]])
        offset += tensor["rawBytes"]
    snapshot = []
    for _ in range(9):
        start = time.perf_counter()
        duplicates = [piece.copy() for piece in pieces]
        snapshot.append(time.perf_counter() - start)
        del duplicates
    del pieces, state

    # --- throughput: repeats interleaved, so that a busy moment of the machine hits every variant
    targets = [("disk", args.disk)] + ([("tmpfs", args.tmpfs)] if args.tmpfs else [])
    samples = {}

    def add(key, value):
        samples.setdefault(key, []).append(value)

    empty = os.path.join(work, "empty")
    open(empty, "wb").close()
    repeats = max(1, args.repeats) * (3 if raw_total < 32 << 20 else 1)  # small subjects: cheap, and noisier
    for _ in range(repeats):
        # process start-up and exit of the CLI, to subtract (ours is timed from its own progress line)
        add("cli_startup", wall(zstd + [empty, "-o", empty + ".zst"]))
        for where, base in targets:
            root = os.path.join(base, name, "copy")
            shutil.rmtree(root, ignore_errors=True)
            phases = timed_copy(elastic, args.checkpoint, root, level, "auto", 0)
            for key, value in phases.items():
                add(f"ours_{where}_{key}", value)
            shutil.rmtree(root)
            if args.threads_variant:
                phases = timed_copy(elastic, args.checkpoint, root, level, "auto", 1)
                add(f"ours_t1_{where}_encode_commit", phases["encode_commit"])
                shutil.rmtree(root)
            out = os.path.join(base, name, "cli.zst")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            add(f"cli_{where}", wall(zstd + [raw_path, "-o", out]))
            # the least that makes the file durable: fsync(2) of the file and of its directory
            add(f"cli_{where}_sync", wall(["sync", out, os.path.dirname(out)]))
            os.remove(out)
            out = os.path.join(base, name, "cli-st.zst")
            add(f"cli_st_{where}", wall(["zstd", "-q", "-f", "--single-thread", f"-{level}", raw_path, "-o", out]))
            add(f"cli_st_{where}_sync", wall(["sync", out, os.path.dirname(out)]))
            os.remove(out)
            out = os.path.join(base, name, "cli-shuffled.zst")
            add(f"cli_shuffled_{where}", wall(zstd + [shuffled_path, "-o", out]))
            add(f"cli_shuffled_{where}_sync", wall(["sync", out, os.path.dirname(out)]))
            os.remove(out)
    for _ in range(max(1, args.read_repeats)):
        # reading: ours verifies everything (reads, checks stored XXH64, decompresses, unshuffles,
        # checks raw XXH64 and shapes); `inspect` (start-up + manifest) is subtracted
        add("ours_verify", wall([elastic, "checkpoint", "verify", args.checkpoint], stdout=subprocess.DEVNULL))
        add("ours_inspect", wall([elastic, "checkpoint", "inspect", args.checkpoint], stdout=subprocess.DEVNULL))
        with open(os.devnull, "wb") as null:
            add("cli_decode_raw", wall(["zstd", "-q", "-d", "-T1", "-c", raw_path + ".zst"], stdout=null))
            add("cli_decode_shuffled", wall(["zstd", "-q", "-d", "-T1", "-c", shuffled_path + ".zst"], stdout=null))
            add("cli_decode_startup", wall(["zstd", "-q", "-d", "-T1", "-c", empty + ".zst"], stdout=null))
    samples["snapshot_copy"] = snapshot
    result = {
        "kind": "offline", "name": name, "checkpoint": args.checkpoint, "step": manifest["step"], "level": level,
        "zstd_threads": args.zstd_threads, "layers": len(manifest["blobs"]),
        "tensors": sum(1 for _ in tensors_of(manifest)), "raw": raw_total, "shuffled_bytes": shuffled_bytes,
        "stored_auto": stored_auto, "stored_never": stored_never, "cli_raw": cli["raw"], "cli_shuffled": cli["shuffled"],
        "repeats": repeats, "read_repeats": args.read_repeats, "samples": samples, "medians": {k: median(v) for k, v in samples.items()},
    }
    json.dump(result, open(args.out, "w"), indent=1)
    for path in (raw_path, shuffled_path, raw_path + ".zst", shuffled_path + ".zst", empty, empty + ".zst"):
        os.remove(path)


# ---------------------------------------------------------------------------------------------
# what-if: the same write as a separate process, at normal and at idle priority, during training

def inject(args):
    """Runs beside a training run without checkpoints. Each time step k commits with k+1 a multiple
    of `every` (and a window still fits before the end), it starts `elastic checkpoint copy SUBJECT`
    (read + verify the subject, then the full write protocol: the CPU and disk work of a checkpoint
    write, plus the read), alternately at normal priority and under `chrt --idle 0` (SCHED_IDLE: only
    cycles no other thread wants). Records each copy's start and exit in WORK/injections.json."""
    ledger_path = os.path.join(args.work, "controller", "ledger.jsonl")
    modes = ["normal", "idle"]
    triggers = [k for k in range(args.every - 1, args.steps - 1 - args.every // 2, args.every)]
    events, skipped = [], []
    running = None
    buffer, offset, last = "", 0, -1
    deadline = time.time() + args.timeout
    count = 0
    while time.time() < deadline:
        try:
            with open(ledger_path) as ledger:
                ledger.seek(offset)
                chunk = ledger.read()
                offset += len(chunk.encode())
        except FileNotFoundError:
            chunk = ""
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        for line in lines:
            if line.strip():
                entry = json.loads(line)
                last = max(last, entry.get("step", -1))
        if running and running["process"].poll() is not None:
            running["end"] = time.time()
            shutil.rmtree(running.pop("root"), ignore_errors=True)
            running.pop("process")
            events.append(running)
            running = None
        while triggers and triggers[0] <= last:
            k = triggers.pop(0)
            if running or k < last:
                skipped.append(k + 1)
                continue
            mode = modes[count % 2]
            count += 1
            root = os.path.join(args.scratch, f"inject-{k + 1}")
            command = [args.elastic, "checkpoint", "copy", args.checkpoint, root]
            if mode == "idle":
                command = ["chrt", "--idle", "0"] + command
            running = {"step": k + 1, "mode": mode, "start": time.time(), "root": root,
                       "process": subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
        if last >= args.steps - 1 and not running:
            break
        time.sleep(0.01)
    json.dump({"every": args.every, "events": events, "skipped": skipped}, open(os.path.join(args.work, "injections.json"), "w"))


# ---------------------------------------------------------------------------------------------
# one training run: ledger and logs

def stamp(entry):
    return datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()


def seconds(text):
    """A Duration.shortDescription: 12ms, 1.5s, 3s, 2m5s."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:([\d.]+)s)?|(\d+)ms", text)
    if not match:
        raise ValueError(text)
    if match.group(3):
        return int(match.group(3)) / 1000
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)


def run_summary(args):
    job = json.load(open(args.job))
    ledger = [json.loads(line) for line in open(os.path.join(args.work, "controller", "ledger.jsonl"))]
    ledger = [e for e in ledger if "step" in e and "time" in e]
    controller_log = open(os.path.join(args.work, "controller.log"), errors="replace").read()
    worker_logs = [open(os.path.join(args.work, f), errors="replace").read() for f in sorted(os.listdir(args.work)) if re.fullmatch(r"worker-\d+\.log", f)]
    commits = {int(s): seconds(t) for s, t in re.findall(r"checkpoint of step (\d+) committed in (\S+):", controller_log)}
    refused = re.findall(r"checkpoint of step (\d+) (skipped|abandoned|not written|failed|could not be committed)", controller_log + "".join(worker_logs))
    writes = [(int(s), seconds(t)) for log in worker_logs for s, t in re.findall(r"checkpoint of step (\d+): wrote layers \S+ \(\d+ KiB → \d+ KiB\) in (\S+)", log)]
    restores = [(int(kib) * 1024, seconds(t)) for log in worker_logs for kib, t in re.findall(r"restored layers \S+ \((\d+) KiB\) from checkpoint .* in (\S+)", log)]
    injections = {}
    path = os.path.join(args.work, "injections.json")
    if os.path.exists(path):
        injections = json.load(open(path))
    result = {
        "injections": injections,
        "kind": "run", "name": args.name, "label": args.label, "plan": f"{job['plan']['stages']}x{job['plan']['replicas']}",
        "steps": job["steps"],
        "every": job.get("checkpoint", {}).get("every", 0) if args.label == "on" else injections.get("every", 0),
        "ledger": [[e["step"], stamp(e)] for e in ledger], "commits": commits, "writes": writes,
        "refused": refused, "restores": restores,
    }
    json.dump(result, open(args.out, "w"))


# ---------------------------------------------------------------------------------------------
# the report

def step_times(run, skip=5):
    """{step: seconds since the previous step's commit}, from the ledger (first `skip` steps dropped)."""
    ledger = sorted(run["ledger"])
    return {b[0]: b[1] - a[1] for a, b in zip(ledger, ledger[1:]) if b[0] == a[0] + 1 and b[0] >= skip}


def windows_of(run, events):
    """events: {key: (start, end)} in seconds since 1970. Window of an event: the steps from the
    first one committed after `start` until the first one committed at or after `end`, plus one."""
    ledger = sorted(run["ledger"])
    windows = {}
    for key, (start, end) in events.items():
        after = [s for s, t in ledger if t > start]
        if not after:
            continue
        window = []
        for s, t in ledger:
            if s < after[0]:
                continue
            window.append(s)
            if t >= end:
                break
        if window and window[-1] + 1 <= ledger[-1][0]:
            window.append(window[-1] + 1)
        windows[key] = window
    return windows


def checkpoint_events(run):
    """Mid-run checkpoints: requested when step S-1 commits, done `committed in` later."""
    ledger = dict((s, t) for s, t in run["ledger"])
    return {int(s): (ledger[int(s) - 1], ledger[int(s) - 1] + took) for s, took in run["commits"].items()
            if int(s) < run["steps"] and int(s) - 1 in ledger}


def stall_of_run(run, events=None):
    """Per event (a mid-run checkpoint by default), the excess of the steps of its window over the
    median step of the run's steps outside every window: (base, windows, {key: excess seconds})."""
    windows = windows_of(run, checkpoint_events(run) if events is None else events)
    base, excess = excess_in(run, windows)
    return base, windows, excess


def excess_in(run, windows):
    """(base, {checkpoint: Σ (step time − base) over its window}); base = median step outside the windows."""
    times = step_times(run)
    inside = {k for w in windows.values() for k in w}
    base = median([dt for k, dt in times.items() if k not in inside])
    return base, {s: sum(times[k] - base for k in w if k in times) for s, w in windows.items()}


def placebo_of(run, windows, base):
    """The same measure on windows of the same lengths placed half-way between events, in the same
    run (nothing is written there): what the window sum gives with no checkpoint at all (the skew
    of step times above their median, and noise). For a window too long to fit there: its length ×
    (mean − median) of the steps outside every window."""
    times = step_times(run)
    inside = {k for w in windows.values() for k in w}
    outside = [dt - base for k, dt in times.items() if k not in inside]
    skew = statistics.fmean(outside) if outside else 0.0  # mean − median of a step outside the windows
    every = run["every"]
    placebo = {}
    for key, window in windows.items():
        first = window[0] + every // 2
        candidate = list(range(first, first + len(window)))
        if all(k in times and k not in inside for k in candidate):
            placebo[key] = sum(times[k] - base for k in candidate)
        else:  # too long to fit half-way: the expected sum instead
            placebo[key] = skew * len(window)
    return placebo


def iqr(values):
    if len(values) < 4:
        return "-"
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.2f}–{q[2]:.2f}"


def fmt(value, spec=".1f", dash="-"):
    if value is None or (isinstance(value, float) and value != value):
        return dash
    return format(value, spec)


def table(header, rows, align=None):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header] + rows):
        cells = []
        for i, cell in enumerate(row):
            cell = str(cell)
            cells.append(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]))
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(ok):
    return "yes" if ok else "NO"


def report(args):
    results = [json.load(open(path)) for path in args.results]
    offline_results = [r for r in results if r["kind"] == "offline"]
    runs = [r for r in results if r["kind"] == "run"]
    names = [r["name"] for r in offline_results] or sorted({r["name"] for r in runs})
    verdicts = []

    for r in offline_results:
        print(f"subject {r['name']}: {r['checkpoint']} (step {r['step']}, {r['layers']} layers, {r['tensors']} tensors, "
              f"{r['raw'] / 2**20:.1f} MiB raw state = weights + momentum; {100 * r['shuffled_bytes'] / r['raw']:.1f}% of it in tensors `auto` shuffles)")
    level = offline_results[0]["level"] if offline_results else "?"
    zt = offline_results[0]["zstd_threads"] if offline_results else 1
    print()

    # ---- ratios
    if offline_results:
        print(f"== 1. compressed size ratio (raw ÷ stored, higher is better), zstd level {level}")
        rows = []
        for r in offline_results:
            ours, never = r["raw"] / r["stored_auto"], r["raw"] / r["stored_never"]
            cli_raw, cli_shuf = r["raw"] / r["cli_raw"], r["raw"] / r["cli_shuffled"]
            gain = cli_shuf - cli_raw
            target = cli_raw + gain
            ok = ours >= target - 0.0005
            verdicts.append((f"{r['name']} ratio ≥ CLI raw + shuffle gain", ok))
            rows.append([r["name"], f"{ours:.3f}", f"{never:.3f}", f"{cli_raw:.3f}", f"{cli_shuf:.3f}", f"{ours - never:+.3f}", f"{gain:+.3f}",
                         f"{target:.3f}", f"{ours / target:.3f}", verdict(ok)])
        print(table(["workload", "ours (auto)", "ours (never)", f"CLI raw", "CLI shuffled", "gain ours", "gain CLI", "target", "ours÷target", "met"], rows))
        print("ours (auto) = the checkpoint as training wrote it; ours (never) = `checkpoint copy --shuffle never`; CLI = "
              f"`zstd -T{zt} -{level}` on the concatenated raw float32 bytes (raw) and on the same bytes byte-plane shuffled per tensor\n"
              "like `auto` (shuffled); gain = shuffled − unshuffled ratio; target = CLI raw + CLI shuffle gain.")
        print()

    # ---- write throughput
    if offline_results:
        print(f"== 2. write throughput (MB/s of raw state; median of {', '.join(str(r['repeats']) + ' (' + r['name'] + ')' for r in offline_results)}), level {level}")
        rows = []
        for r in offline_results:
            m = r["medians"]
            startup = m["cli_startup"]
            for where in ("disk", "tmpfs"):
                if f"ours_{where}_encode_commit" not in m:
                    continue
                ours = r["raw"] / m[f"ours_{where}_encode_commit"] / MB
                cli = r["raw"] / max(1e-6, m[f"cli_{where}"] - startup) / MB
                cli_sync = r["raw"] / max(1e-6, m[f"cli_{where}"] - startup + m[f"cli_{where}_sync"]) / MB
                cli_shuf_sync = r["raw"] / max(1e-6, m[f"cli_shuffled_{where}"] - startup + m[f"cli_shuffled_{where}_sync"]) / MB
                cli_st_sync = r["raw"] / max(1e-6, m[f"cli_st_{where}"] - startup + m[f"cli_st_{where}_sync"]) / MB
                t1 = m.get(f"ours_t1_{where}_encode_commit")
                ratio = ours / cli_sync
                if where == "disk":
                    verdicts.append((f"{r['name']} write ≥ 0.9× CLI (+fsync, disk)", ratio >= 0.9))
                rows.append([f"{r['name']} {where}", f"{ours:.0f}", fmt(r["raw"] / t1 / MB if t1 else None, ".0f"),
                             f"{1000 * m[f'ours_{where}_write']:.0f}+{1000 * m[f'ours_{where}_commit']:.0f}",
                             f"{cli:.0f}", f"{cli_sync:.0f}", f"{cli_st_sync:.0f}", f"{cli_shuf_sync:.0f}", f"{ours / cli:.2f}x", f"{ratio:.2f}x",
                             f"{ours / cli_st_sync:.2f}x", verdict(ratio >= 0.9)])
        print(table(["workload", "ours", "ours -T1", "ours ms (blobs+commit)", "CLI", "CLI+fsync", "CLI 1thr+fsync", "CLI shuf+fsync",
                     "ours÷CLI", "ours÷(CLI+fsync)", "ours÷(1thr+fsync)", "≥0.9"], rows))
        print("ours = `checkpoint copy` from its \"writing\" progress line to its exit (encode, write and fsync every blob, part record,\n"
              "manifest, renames, `latest`, each fsynced; the source's load and verification before that line is not counted);\n"
              f"ours -T1 = the same with `--threads 1`; CLI = `zstd -T{zt} -{level} raw.bin -o out` minus the CLI's start-up on an empty file;\n"
              "+fsync adds `sync out DIR` (fsync of the output and its directory); 1thr = `zstd --single-thread` (no worker or I/O thread,\n"
              "like ours with threads 0); shuf = the CLI on shuffled.bin; tmpfs rows write to /dev/shm, where fsync costs nothing.\n"
              "The target is judged on ours÷(CLI+fsync), disk.")
        print()

    # ---- restore
    restore_runs = [r for r in runs if r["label"] == "restore"]
    if offline_results:
        print(f"== 3. restore / read throughput (MB/s of raw state, median; ms timed in brackets)")
        rows = []
        for r in offline_results:
            m = r["medians"]
            restores = [(b, t) for run in restore_runs if run["name"] == r["name"] for b, t in run["restores"] if t > 0]
            restore_s = median([t for _, t in restores]) if restores else float("nan")
            restore = median([b / t for b, t in restores]) / MB if restores else float("nan")
            verify_s = m["ours_verify"] - m["ours_inspect"]
            raw_s = m["cli_decode_raw"] - m["cli_decode_startup"]
            shuf_s = m["cli_decode_shuffled"] - m["cli_decode_startup"]
            mbs = lambda t: r["raw"] / t / MB if t > 0 else float("nan")
            rows.append([r["name"], f"{fmt(restore, '.0f')} ({fmt(1000 * restore_s, '.0f')})", str(len(restores)),
                         f"{fmt(mbs(verify_s), '.0f')} ({1000 * verify_s:.0f})", f"{fmt(mbs(raw_s), '.0f')} ({1000 * raw_s:.0f})",
                         f"{fmt(mbs(shuf_s), '.0f')} ({1000 * shuf_s:.0f})", fmt(restore / mbs(raw_s), ".2f") + "x",
                         fmt(mbs(verify_s) / mbs(raw_s), ".2f") + "x", fmt(mbs(verify_s) / mbs(shuf_s), ".2f") + "x"])
        print(table(["workload", "ours restore", "runs", "ours verify", "zstd -d raw", "zstd -d shuffled", "restore÷zstd raw", "verify÷zstd raw", "verify÷zstd shuf"], rows))
        print("ours restore = the worker's \"restored layers … in T\" in a 1×1 `--restore` run (read, verify every checksum, decompress,\n"
              "unshuffle, build the layers; T is logged in ms, in 0.1 s above 1 s); ours verify = `checkpoint verify` minus `checkpoint\n"
              f"inspect` (start-up + manifest), median of {offline_results[0].get('read_repeats', '?')}; zstd -d = `zstd -d -T1 -c FILE.zst > /dev/null` on the CLI's files from table 1, minus\n"
              "its start-up. Everything is read from the page cache. Timings under ~20 ms (W1) are at the resolution of process timing.")
        print()

    # ---- stall
    if runs:
        print("== 4. training stall per checkpoint (fraction of a step; target ≤ 0.05)")
        rows = []
        encode = {r["name"]: r["medians"].get("ours_tmpfs_encode_commit") for r in offline_results}
        snapshot = {r["name"]: r["medians"].get("snapshot_copy") for r in offline_results}
        groups = []
        for r in runs:
            if r["label"] == "on" and (r["name"], r["plan"]) not in groups:
                groups.append((r["name"], r["plan"]))
        groups.sort(key=lambda g: names.index(g[0]) if g[0] in names else 99)
        for name, plan in groups:
            on = [r for r in runs if r["name"] == name and r["plan"] == plan and r["label"] == "on"]
            off = [r for r in runs if r["name"] == name and r["plan"] == plan and r["label"] == "off"]
            window_fractions, placebo_fractions, corrected, excess_ms, writes, bases, refused = [], [], [], [], [], [], []
            global_fractions = []
            for index, run in enumerate(on):
                base, windows, excess = stall_of_run(run)
                bases.append(base)
                window_fractions += [e / base for e in excess.values()]
                excess_ms += [1000 * e for e in excess.values()]
                writes += [1000 * t for s, t in run["commits"].items() if int(s) < run["steps"]]
                refused += run["refused"]
                placebo = placebo_of(run, windows, base)
                placebo_fractions += [placebo[s] / base for s in placebo]
                corrected += [(excess[s] - placebo[s]) / base for s in placebo]
            for a, b in zip(off, on):  # runs are made in pairs, off then on
                ta, tb = sorted(a["ledger"]), sorted(b["ledger"])
                base_off = median(list(step_times(a).values()))
                n = len([s for s in b["commits"] if int(s) < b["steps"]])
                if n and len(ta) == len(tb):
                    global_fractions.append(((tb[-1][1] - tb[0][1]) - (ta[-1][1] - ta[0][1])) / n / base_off)
            off_base = median([median(list(step_times(r).values())) for r in off])
            frac = median(corrected) if corrected else median(window_fractions)
            stages, replicas = (int(x) for x in plan.split("x"))
            spare = "yes" if stages * replicas < 2 else "no"
            verdicts.append((f"{name} {plan} stall ≤ 5% of a step", frac <= 0.05))
            cpu = encode.get(name)
            copy = snapshot.get(name)
            copy = copy / stages if copy else None  # each stage copies its own layers, the stages at once
            rows.append([name, plan, spare, str(on[0]["every"]), f"{median(bases) * 1000:.1f}", fmt(off_base * 1000),
                         str(len(window_fractions)), f"{median(writes):.0f}", f"{median(writes) / 1000 / median(bases):.1f}",
                         fmt(cpu / median(bases) if cpu else None, ".2f"), fmt(copy / median(bases) if copy else None, ".3f"),
                         f"{median(excess_ms):.1f}", f"{median(window_fractions):.2f}", fmt(median(placebo_fractions), ".2f"),
                         fmt(median(corrected), ".3f"), iqr(corrected), fmt(median(global_fractions), ".2f"),
                         ",".join(sorted({r[1] for r in refused})) or "-", verdict(frac <= 0.05)])
        print(table(["workload", "plan", "spare core", "every", "step ms", "(no ckpt)", "ckpts", "write ms", "write÷step", "encode÷step", "copy÷step",
                     "excess ms/ckpt", "window", "placebo", "stall", "stall p25–p75", "run diff", "refused", "≤0.05"], rows))
        print("step ms = median step (ledger commit to commit) outside checkpoint windows, runs with checkpoints; (no ckpt) = the same job\n"
              "without checkpoints; write ms = the controller's \"committed in\" (request → commit) per mid-run checkpoint; encode÷step = one\n"
              "`checkpoint copy` to tmpfs (the CPU work of a write, from table 2) ÷ step; copy÷step = a copy of every tensor into newly\n"
              "allocated memory (numpy, 4 KiB pages, steady state: what the copy-on-write after the snapshot costs the next update; per stage,\n"
              "the stages copy at once) ÷ step; window = median over checkpoints of\n"
              "Σ(step − median step) over the steps from the request to one step after the commit, ÷ median step (excess ms/ckpt: the same\n"
              "in ms); placebo = the same sum over windows of the same lengths half-way between checkpoints, same run (the measure's bias;\n"
              "for a window too long to fit there, its length × (mean − median step) outside the windows);\n"
              "stall = median of (window − placebo) per checkpoint: the figure judged against the target; run diff = (run time with −\n"
              "without checkpoints) ÷ mid-run checkpoints ÷ step, median over pairs (whole-run drift on a shared machine swamps it).\n"
              "Plans 1x2/2x1 keep both cores busy with training (one matrix thread per worker); 1x1 leaves one core to the writer.")
        print()

    # ---- what-if: priority
    inject_runs = [r for r in runs if r["label"] == "inject" and r.get("injections", {}).get("events")]
    if inject_runs:
        print("== 5. what-if: the same write as a separate process (`checkpoint copy` of the subject) during training without checkpoints")
        rows = []
        for run in inject_runs:
            events = run["injections"]["events"]
            keyed = {e["step"]: (e["start"], e["end"]) for e in events}
            base, windows, excess = stall_of_run(run, keyed)
            placebo = placebo_of(run, windows, base)
            for mode in ("normal", "idle"):
                chosen = [e for e in events if e["mode"] == mode]
                stalls = [(excess[e["step"]] - placebo[e["step"]]) / base for e in chosen if e["step"] in placebo]
                walls = [1000 * (e["end"] - e["start"]) for e in chosen]
                rows.append([run["name"], run["plan"], mode, str(len(chosen)), f"{1000 * base:.1f}", f"{median(walls):.0f}",
                             f"{median(walls) / 1000 / base:.1f}", f"{1000 * median([excess[e['step']] for e in chosen if e['step'] in excess]):.1f}",
                             fmt(median(stalls), ".3f"), iqr(stalls)])
            skipped = run["injections"].get("skipped", [])
            if skipped:
                rows.append([run["name"], run["plan"], "skipped", str(len(skipped)), "", "", "", "", "", ""])
        print(table(["workload", "plan", "priority", "copies", "step ms", "copy ms", "copy÷step", "excess ms", "stall", "stall p25–p75"], rows))
        print("Each copy reads and verifies the subject, then writes it with the full protocol (what a checkpoint write costs, plus the\n"
              "read); normal = a plain process, idle = under `chrt --idle 0` (SCHED_IDLE), alternating. stall = as in table 4 (window −\n"
              "placebo, ÷ median step), windows from the copy's start to its exit. A what-if for running the writer at idle priority;\n"
              "skipped = a copy was still running when the next was due.")
        print()

    if verdicts:
        print("== targets")
        for what, ok in verdicts:
            print(f"  {'met   ' if ok else 'MISSED'}  {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("job")
    p.add_argument("--workload", choices=["w1", "w2"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--plan", default="1x2")
    p.add_argument("--every", type=int, default=0)
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--directory")
    p.add_argument("--level", type=int, default=1)
    p.add_argument("--out", required=True)
    p = sub.add_parser("offline")
    p.add_argument("--elastic", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--disk", required=True)
    p.add_argument("--tmpfs")
    p.add_argument("--level", type=int)
    p.add_argument("--zstd-threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--read-repeats", type=int, default=9)
    p.add_argument("--threads-variant", action="store_true")
    p.add_argument("--out", required=True)
    p = sub.add_parser("inject")
    p.add_argument("--elastic", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--scratch", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--every", type=int, required=True)
    p.add_argument("--timeout", type=float, default=900)
    p = sub.add_parser("run")
    p.add_argument("--name", required=True)
    p.add_argument("--label", choices=["on", "off", "restore", "inject"], required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("report")
    p.add_argument("results", nargs="+")
    args = parser.parse_args()
    {"job": make_job, "offline": offline, "inject": inject, "run": run_summary, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
