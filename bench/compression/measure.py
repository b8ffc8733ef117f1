#!/usr/bin/env python3
"""Helpers of bench/compression.sh (the gradient-compression benchmark); not meant to be run alone.

  measure.py run --label loopback|link --elastic E --data DIR --work DIR --steps N --out FILE.json
                 [--codecs none,fp16,…] [--rate 100mbit] [--probe-seconds 3]
  measure.py report FILE.json…

`run` trains W1 on 1 stage × 4 replicas once per codec, each on a fresh local cluster
(cluster/chaos's Cluster), and records the ledger, the exchange traffic that `elastic status`
reports and, on the link, the bytes that crossed each worker's veth. With `--label link` every
worker runs in a network namespace of its own on a bridge (cluster/chaos's Network) whose veth
pairs are shaped with `tc tbf` to --rate in both directions; a TCP probe between two namespaces
measures the link before and after shaping. Everything it creates is removed on exit, SIGTERM
included. `report` prints the tables; bench/compression/README.md explains every number.
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
import time
from datetime import datetime

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SKIP = 10          # steps left out of the step time (start-up, first exchanges)
WORKERS = 4        # 1 stage × 4 replicas (--replicas changes it)
MB = 1e6


def load_chaos():
    loader = importlib.machinery.SourceFileLoader("chaos", os.path.join(ROOT, "cluster", "chaos"))
    spec = importlib.util.spec_from_loader("chaos", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def stamp(entry):
    return datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()


def compression_of(codec, args):
    if codec == "topk":
        spec = {"codec": "topk", "fraction": args.topk_fraction}
        if args.topk_values:
            spec["values"] = args.topk_values
        if args.topk_warmup:
            spec["warmupSteps"] = args.topk_warmup
        if args.topk_warmup_fraction:
            spec["warmupFraction"] = args.topk_warmup_fraction
    elif codec == "powersgd":
        spec = {"codec": "powersgd", "rank": args.powersgd_rank}
        if args.powersgd_warmup:
            spec["warmupSteps"] = args.powersgd_warmup
    else:
        return {"codec": codec}
    if args.minimum_elements is not None:
        spec["minimumElements"] = args.minimum_elements
    return spec


def describe(codec, compression):
    warm = compression.get("warmupSteps", 0)
    if codec == "topk":
        name = f"topk {compression['fraction'] * 100:g}%"
        if compression.get("values") == "float32":
            name += " f32"
        if warm:
            name += f" w{warm}" + (f"@{compression['warmupFraction'] * 100:g}%" if "warmupFraction" in compression else "")
    elif codec == "powersgd":
        name = f"powersgd r{compression['rank']}" + (f" w{warm}" if warm else "")
    else:
        return codec
    if "minimumElements" in compression:
        name += f" min{compression['minimumElements']}"
    return name


# ---------------------------------------------------------------------------------------------
# the shaped link

def shaped_network_class(chaos):
    class ShapedNetwork(chaos.Network):
        """chaos's bridge and per-worker namespaces, made up front (so that the link can be
        shaped and probed before any worker starts) and kept across the codecs' runs."""

        def __init__(self):
            subnet = 1 + os.getpid() % 250
            taken = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
            if f" 10.231.{subnet}." in taken:
                raise RuntimeError(f"10.231.{subnet}.0/24 is already in use on this host (a chaos run?); run the benchmark again")
            super().__init__()

        def add(self, worker, index):
            if worker in self.namespaces:
                namespace, _, address = self.namespaces[worker]
                return namespace, address
            return super().add(worker, index)

        def shape(self, rate):
            # The root-side veth shapes what flows towards the worker, the namespace's eth0 what
            # the worker sends: 100 Mbit/s each way, like a NIC.
            qdisc = ["root", "tbf", "rate", rate, "burst", "32kbit", "latency", "50ms"]
            for namespace, veth, _ in self.namespaces.values():
                subprocess.run(["tc", "qdisc", "replace", "dev", veth, *qdisc], check=True, capture_output=True)
                subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", "eth0", *qdisc], check=True, capture_output=True)

        def qdiscs(self):
            namespace, veth, _ = next(iter(self.namespaces.values()))
            root = subprocess.run(["tc", "qdisc", "show", "dev", veth], capture_output=True, text=True).stdout.strip()
            inside = subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "show", "dev", "eth0"], capture_output=True, text=True).stdout.strip()
            return f"{veth}: {root}; {namespace} eth0: {inside}"

        def counters(self):
            """worker -> (bytes it sent, bytes it received), from the root-side veth."""
            out = {}
            for worker, (_, veth, _) in self.namespaces.items():
                base = f"/sys/class/net/{veth}/statistics"
                received_by_root = int(open(f"{base}/rx_bytes").read())
                sent_by_root = int(open(f"{base}/tx_bytes").read())
                out[worker] = (received_by_root, sent_by_root)
            return out

    return ShapedNetwork


def probe(network, seconds):
    """TCP throughput from w1's namespace to w2's, in Mbit/s at the receiver."""
    (ns_from, _, _), (ns_to, _, address_to) = network.namespaces["w1"], network.namespaces["w2"]
    script = os.path.join(HERE, "probe.py")
    server = subprocess.Popen(["ip", "netns", "exec", ns_to, sys.executable, script, "serve", address_to, "5299"],
                              stdout=subprocess.PIPE, text=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns_from, sys.executable, script, "send", address_to, "5299", str(seconds)],
                       check=True, timeout=seconds + 30)
        out, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    received, elapsed = out.split()
    return 8 * int(received) / float(elapsed) / 1e6


# ---------------------------------------------------------------------------------------------
# one training run

def bench_cluster_class(chaos):
    class BenchCluster(chaos.Cluster):
        """chaos's Cluster, except that the job is submitted with `elastic train` once every
        worker is a member. With `--job` the controller starts training on the first member and
        grows the plan as the others join (a fixed plan's replicas are an upper bound), so the
        first steps would run on fewer workers and every run would begin with re-plans."""

        def spawn(self, name, args, namespace=None):
            if name == "controller" and "--job" in args:
                at = args.index("--job")
                args = args[:at] + args[at + 2:]
            return super().spawn(name, args, namespace)

        def submit(self, job, members, timeout=60):
            deadline = time.time() + timeout
            while True:
                alive = [m for m in (self.status() or {}).get("members", []) if m["state"] == "alive"]
                if len(alive) >= members:
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"only {len(alive)} of {members} workers became members within {timeout} s; logs in {self.work}")
                time.sleep(0.2)
            self.run("train", job, "--data-dir", self.data)

    return BenchCluster


def train(chaos, args, codec, network, index):
    compression = compression_of(codec, args)
    work = os.path.join(args.work, f"{args.label}-{codec}")
    os.makedirs(work)
    job = json.load(open(os.path.join(ROOT, "jobs", "w1.json")))
    job.pop("checkpoint", None)
    job.update({"name": f"w1-{codec}", "steps": args.steps, "data": {"path": os.path.abspath(args.data)},
                "plan": {"stages": 1, "replicas": WORKERS}, "compression": compression})
    json.dump(job, open(os.path.join(work, "job.json"), "w"), indent=1)
    log(f"{args.label} {index}/{len(args.codecs)}: {describe(codec, compression)}, {args.steps} steps")
    warmup = compression.get("warmupSteps", 0)
    cluster = bench_cluster_class(chaos)(args.elastic, work, network)
    traffic = []        # per status sample: (mean bytes sent, mean received, mean ratio vs float32) over the slots
    wire = []           # (committed steps, {worker: (sent, received)}), taken as each commit shows up
    started = time.time()
    phase, detail = "?", ""
    try:
        cluster.start("job.json")
        for _ in range(WORKERS):
            cluster.join()
        cluster.submit("job.json", WORKERS)
        seen = 0
        last_status = 0.0
        ledger_path = os.path.join(cluster.data, "ledger.jsonl")
        while True:
            time.sleep(0.1)
            if cluster.processes["controller"].poll() is not None:
                phase, detail = "controller exited", f"status {cluster.processes['controller'].returncode}"
                break
            committed = sum(1 for _ in open(ledger_path)) if os.path.exists(ledger_path) else 0
            if network is not None and committed != seen:
                wire.append((committed, network.counters()))
            seen = committed
            if time.time() - last_status < args.poll and committed < args.steps:
                continue
            last_status = time.time()
            training = (cluster.status() or {}).get("training") or {}
            phase, detail = training.get("phase", "?"), training.get("detail", "")
            slots = [row for row in training.get("traffic", []) if row["bytesSent"] > 0]
            # PowerSGD's warm-up steps cross uncompressed: the steady state starts after them.
            if training.get("committedSteps", 0) > max(SKIP, warmup) and slots:
                traffic.append((statistics.mean(r["bytesSent"] for r in slots), statistics.mean(r["bytesReceived"] for r in slots),
                                statistics.mean(r["compressionRatio"] for r in slots)))
            if phase in ("finished", "stopped"):
                break
            if time.time() - started > args.time_limit:
                phase, detail = "timed out", f"after {args.time_limit:.0f} s with {committed} of {args.steps} steps committed"
                break
    finally:
        cluster.stop_all()
    ledger = cluster.ledger()
    if phase != "finished" or len(ledger) != args.steps:
        raise RuntimeError(f"{args.label} {codec}: the job ended '{phase}' ({detail}) with {len(ledger)} of {args.steps} steps; logs in {work}")
    gaps = [stamp(b) - stamp(a) for a, b in zip(ledger[SKIP:], ledger[SKIP + 1:]) if a["generation"] == b["generation"]]
    result = {
        "label": args.label, "codec": codec, "name": describe(codec, compression), "compression": compression,
        "steps": len(ledger), "generations": sorted({e["generation"] for e in ledger}),
        "replicasAgree": all(e.get("replicasAgree", True) for e in ledger),
        "losses": [e["loss"] for e in ledger], "finalLoss": ledger[-1]["loss"],
        "stepSeconds": statistics.median(gaps) if gaps else float("nan"),
        "meanStepSeconds": statistics.mean(gaps) if gaps else float("nan"),
        "runSeconds": stamp(ledger[-1]) - stamp(ledger[0]),
        "wallSeconds": time.time() - started,
        "trafficSamples": len(traffic),
        "bytesSent": statistics.mean(t[0] for t in traffic) if traffic else None,
        "bytesReceived": statistics.mean(t[1] for t in traffic) if traffic else None,
        "reportedRatio": statistics.mean(t[2] for t in traffic) if traffic else None,
        "warmupSteps": warmup,
    }
    # Bytes on the wire (IP packets: TLS records, TCP/IP headers, control traffic) per step and
    # worker, between the first sample past SKIP steps and the last one.
    usable = [w for w in wire if w[0] >= SKIP]
    if len(usable) >= 2 and usable[-1][0] > usable[0][0]:
        (s0, c0), (s1, c1) = usable[0], usable[-1]
        steps = s1 - s0
        result["wireSent"] = statistics.mean((c1[w][0] - c0[w][0]) / steps for w in c0)
        result["wireReceived"] = statistics.mean((c1[w][1] - c0[w][1]) / steps for w in c0)
    if len(result["generations"]) > 1:
        log(f"  note: {codec} ran in {len(result['generations'])} generations (a re-plan during the run)")
    log(f"  {result['stepSeconds'] * 1000:.1f} ms/step, final loss {result['finalLoss']:.6f}"
        + (f", {result['bytesSent'] / MB:.3f} MB sent/step/worker" if result["bytesSent"] else "")
        + (f", wire {result['wireSent'] / MB:.3f} MB out/step/worker" if "wireSent" in result else ""))
    return result


def run(args):
    chaos = load_chaos()
    args.codecs = [c for c in args.codecs.split(",") if c]
    os.makedirs(args.work, exist_ok=True)
    output = {"label": args.label, "steps": args.steps, "replicas": WORKERS, "rate": args.rate if args.label == "link" else None,
              "load": open("/proc/loadavg").read().split()[:3], "runs": []}
    network = None
    # SIGTERM unwinds like an exception: the clusters are stopped and the namespaces removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.label == "link":
            if not chaos.Network.available() or subprocess.run(["which", "tc"], capture_output=True).returncode != 0:
                raise RuntimeError("the shaped link needs root, `ip netns` and `tc` (iproute2)")
            network = shaped_network_class(chaos)()
            for index in range(1, WORKERS + 1):
                network.add(f"w{index}", index)
            log(f"bridge {network.bridge} {network.host}/24, namespaces {', '.join(ns for ns, _, _ in network.namespaces.values())}")
            output["probeUnshaped"] = probe(network, args.probe_seconds)
            network.shape(args.rate)
            output["probeShaped"] = probe(network, args.probe_seconds)
            output["qdisc"] = network.qdiscs()
            log(f"TCP probe w1 -> w2: {output['probeUnshaped']:.0f} Mbit/s unshaped, {output['probeShaped']:.1f} Mbit/s with tbf {args.rate}")
        for index, codec in enumerate(args.codecs, 1):
            output["runs"].append(train(chaos, args, codec, network, index))
            json.dump(output, open(args.out, "w"), indent=1)
    finally:
        if network is not None:
            network.remove()
            log(f"removed bridge {network.bridge} and {len(network.namespaces)} namespaces")
    output["loadEnd"] = open("/proc/loadavg").read().split()[:3]
    json.dump(output, open(args.out, "w"), indent=1)


# ---------------------------------------------------------------------------------------------
# report

def table(rows, align):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [str(c).ljust(w) if a == "<" else str(c).rjust(w) for c, w, a in zip(row, widths, align)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def megabytes(value):
    return "-" if value is None else (f"{value / MB:.3f} MB" if value >= 10_000 else f"{value / 1e3:.1f} kB")


def report(args):
    sets = [json.load(open(path)) for path in args.files]
    verdicts = []
    loop = next((s for s in sets if s["label"] == "loopback"), None)
    link = next((s for s in sets if s["label"] == "link"), None)
    if loop and loop["runs"]:
        runs = {r["codec"]: r for r in loop["runs"]}
        base = runs.get("none")
        print(f"W1, 1 stage x {loop.get('replicas', 4)} replicas, {loop['steps']} steps, on loopback (load average {' '.join(loop['load'])} at the start)")
        rows = [["codec", "sent/step/worker", "x fewer than none", "x vs float32 (status)", "final loss", "vs none", "last-10 mean vs none", "step (ms)", "step vs none"]]
        for r in loop["runs"]:
            fewer = base["bytesSent"] / r["bytesSent"] if base and r["bytesSent"] else None
            dloss = (r["finalLoss"] - base["finalLoss"]) / base["finalLoss"] if base else None
            tail = statistics.mean(r["losses"][-10:])
            dtail = (tail - statistics.mean(base["losses"][-10:])) / statistics.mean(base["losses"][-10:]) if base else None
            rows.append([r["name"], megabytes(r["bytesSent"]), f"{fewer:.1f}x" if fewer else "-",
                         f"{r['reportedRatio']:.1f}x" if r["reportedRatio"] else "-", f"{r['finalLoss']:.6f}",
                         f"{dloss * 100:+.2f}%" if dloss is not None else "-", f"{dtail * 100:+.2f}%" if dtail is not None else "-",
                         f"{r['stepSeconds'] * 1000:.1f}", f"{r['stepSeconds'] / base['stepSeconds']:.2f}x" if base else "-"])
        print(table(rows, "<>>>>>>>>"))
        for r in loop["runs"]:
            warm = min(r.get("warmupSteps", 0), r["steps"])
            if warm and "warmupFraction" in r["compression"]:
                print(f"{r['name']}: sent/step/worker is the steady state after its {warm} warm-up steps, whose fraction fell "
                      f"from {r['compression']['warmupFraction'] * 100:g}% to {r['compression']['fraction'] * 100:g}%")
            elif warm and base and r["bytesSent"]:
                dense = r["bytesSent"] * r["reportedRatio"]
                mean = (warm * dense + (r["steps"] - warm) * r["bytesSent"]) / r["steps"]
                print(f"{r['name']}: sent/step/worker is the steady state after its {warm} uncompressed warm-up steps; over all "
                      f"{r['steps']} steps it sent {megabytes(mean)} per step and worker on average, {base['bytesSent'] / mean:.1f}x fewer than none")
        odd = [r["name"] for r in loop["runs"] if len(r["generations"]) > 1 or not r["replicasAgree"]]
        if odd:
            print(f"note: re-plans or replica disagreement in: {', '.join(odd)}")
        if base and loop.get("replicas", 4) != 4:
            print(f"(no targets: they are stated for 4 replicas, this run had {loop['replicas']})")
        elif base:
            for codec, need in (("topk", 50), ("powersgd", 30)):
                r = runs.get(codec)
                if not r:
                    continue
                fewer = base["bytesSent"] / r["bytesSent"]
                dloss = (r["finalLoss"] - base["finalLoss"]) / base["finalLoss"]
                bytes_ok, loss_ok = fewer >= need, abs(dloss) <= 0.02
                verdicts.append((bytes_ok and loss_ok,
                                 f"{r['name']}: {fewer:.1f}x fewer bytes than none{' (steady state)' if r.get('warmupSteps') else ''} (>= {need}x: {'met' if bytes_ok else 'missed'}), "
                                 f"final loss {dloss * 100:+.2f}% from none (within 2%: {'met' if loss_ok else 'missed'})"))
    if link and link["runs"]:
        runs = {r["codec"]: r for r in link["runs"]}
        base = runs.get("none")
        if loop:
            print()
        print(f"The same on a {link['rate']} link per worker (tc tbf on both ends of each veth), {link['steps']} steps "
              f"(load average {' '.join(link['load'])} at the start)")
        print(f"TCP probe between two worker namespaces: {link['probeUnshaped']:.0f} Mbit/s unshaped, {link['probeShaped']:.1f} Mbit/s shaped")
        rows = [["codec", "step (ms)", "none / codec", "sent/step/worker (status)", "on the wire out/step/worker", "in/step/worker", "final loss"]]
        for r in link["runs"]:
            rows.append([r["name"], f"{r['stepSeconds'] * 1000:.1f}", f"{base['stepSeconds'] / r['stepSeconds']:.2f}x" if base else "-",
                         megabytes(r["bytesSent"]), megabytes(r.get("wireSent")), megabytes(r.get("wireReceived")), f"{r['finalLoss']:.6f}"])
        print(table(rows, "<>>>>>>"))
        odd = [r["name"] for r in link["runs"] if len(r["generations"]) > 1 or not r["replicasAgree"]]
        if odd:
            print(f"note: re-plans or replica disagreement in: {', '.join(odd)}")
        if loop:
            # The link changes only the timing: the same codec must give the same loss curve.
            same = [r["name"] for r in link["runs"] if r["codec"] in {x["codec"] for x in loop["runs"]}
                    and r["losses"] == next(x for x in loop["runs"] if x["codec"] == r["codec"])["losses"][:len(r["losses"])]]
            differ = [r["name"] for r in link["runs"] if r["name"] not in same]
            print(f"loss curves equal to the loopback runs' first {link['steps']} steps, bit for bit: {', '.join(same) or 'none'}"
                  + (f"; different: {', '.join(differ)}" if differ else ""))
        if base:
            best = max((r for r in link["runs"] if r is not base), key=lambda r: base["stepSeconds"] / r["stepSeconds"], default=None)
            if best:
                speedup = base["stepSeconds"] / best["stepSeconds"]
                verdicts.append((speedup >= 3, f"{link['rate']} link: fastest codec {best['name']} is {speedup:.2f}x faster per step than none (target >= 3x)"))
    if verdicts:
        steps = loop["steps"] if loop else None
        print("\ntargets:" if steps in (None, 300) else f"\ntargets (stated for 300 steps; this run's loopback part had {steps}):")
        for ok, text in verdicts:
            print(f"  {'MET   ' if ok else 'MISSED'} {text}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--label", choices=["loopback", "link"], required=True)
    r.add_argument("--elastic", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--steps", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--codecs", default="none,fp16,bf16,int8,topk,powersgd")
    r.add_argument("--topk-fraction", type=float, default=0.01)
    r.add_argument("--powersgd-rank", type=int, default=4)
    r.add_argument("--powersgd-warmup", type=int, default=0)
    r.add_argument("--topk-values", choices=["bf16", "float32"], default=None)
    r.add_argument("--topk-warmup", type=int, default=0)
    r.add_argument("--topk-warmup-fraction", type=float, default=None)
    r.add_argument("--minimum-elements", type=int, default=None)
    r.add_argument("--replicas", type=int, default=4)
    r.add_argument("--rate", default="100mbit")
    r.add_argument("--probe-seconds", type=float, default=3)
    r.add_argument("--poll", type=float, default=2.0, help="seconds between status samples")
    r.add_argument("--time-limit", type=float, default=900, help="seconds per run")
    p = sub.add_parser("report")
    p.add_argument("files", nargs="+")
    args = parser.parse_args()
    if args.command == "run":
        global WORKERS
        WORKERS = args.replicas
        args.elastic = os.path.abspath(args.elastic)
        run(args)
    else:
        report(args)


if __name__ == "__main__":
    sys.exit(main())
