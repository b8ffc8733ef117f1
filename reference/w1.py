#!/usr/bin/env python3
"""Workload W1 in numpy (float32), one process: the yardstick elastic's training is compared with.

docs/w1.md defines W1; this file computes it independently of the Swift code, so that the
tests, cluster/local.sh and cluster/chaos can check elastic's data set byte for byte and its
loss curve number for number.

    python3 reference/w1.py [--steps 50] [--samples 65536] [--seed 42] [--batch 256] [--dump-dir DIR]

prints `step <t> loss <value>` for steps 0 … steps-1. With --dump-dir it also writes the data
set and the initial weights as raw little-endian files: x.f32 (samples × 256), y.i32 (labels)
and init.f32 (every layer's W then b, in layer order).

As a module: `samples(seed, first, count)` gives any range of the data set without generating
what comes before it, `initial_weights`, `epoch_order` and `train` the rest.
"""
import argparse
import math
import os
import sys

import numpy as np

FEATURES = 256
TEACHER_HIDDEN = 64
CLASSES = 10
WIDTHS = (FEATURES, 512, 512, 512, 512, CLASSES)
LEARNING_RATE = np.float32(0.05)
MOMENTUM = np.float32(0.9)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class Stream:
    """A SplitMix64 stream: draw i (i = 1, 2, …) is mix(seed + i·golden mod 2^64).

    `position` counts the draws taken so far, so a stream can start anywhere in its sequence.
    """

    def __init__(self, seed: int, position: int = 0):
        self.seed = np.uint64(seed % (1 << 64))
        self.position = position

    def draws(self, count: int) -> np.ndarray:
        index = np.arange(self.position + 1, self.position + 1 + count, dtype=np.uint64)
        self.position += count
        with np.errstate(over="ignore"):
            z = self.seed + index * _GOLDEN
            z = (z ^ (z >> np.uint64(30))) * _MIX1
            z = (z ^ (z >> np.uint64(27))) * _MIX2
            return z ^ (z >> np.uint64(31))

    def uniforms(self, count: int) -> np.ndarray:
        """Float64 in [0, 1): the top 53 bits of a draw."""
        return (self.draws(count) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53

    def normals(self, count: int) -> np.ndarray:
        """Float32 normals, each from two consecutive uniforms (Box–Muller, cosine only)."""
        pairs = self.uniforms(2 * count).reshape(count, 2)
        radius = np.sqrt(-2.0 * np.log(1.0 - pairs[:, 0]))
        return (radius * np.cos(2.0 * math.pi * pairs[:, 1])).astype(np.float32)


def teacher(seed: int):
    """The two teacher matrices, from stream `seed`."""
    stream = Stream(seed)
    t1 = stream.normals(FEATURES * TEACHER_HIDDEN).reshape(FEATURES, TEACHER_HIDDEN)
    t1 *= np.float32(1.0 / math.sqrt(FEATURES))
    t2 = stream.normals(TEACHER_HIDDEN * CLASSES).reshape(TEACHER_HIDDEN, CLASSES)
    t2 *= np.float32(1.0 / math.sqrt(TEACHER_HIDDEN))
    return t1, t2


def samples(seed: int, first: int, count: int):
    """Samples first … first+count-1: features (count × 256, float32) and labels (int32)."""
    t1, t2 = teacher(seed)
    # Each sample takes 256 normals, each normal two draws of stream seed+1.
    stream = Stream(seed + 1, position=2 * FEATURES * first)
    x = stream.normals(count * FEATURES).reshape(count, FEATURES)
    logits = np.maximum(x @ t1, np.float32(0)) @ t2
    return x, np.argmax(logits, axis=1).astype(np.int32)  # argmax keeps the first maximum


def initial_weights(seed: int, widths=WIDTHS):
    """[(W, b)] per layer from stream seed+2: W (fan_in × fan_out) then b, uniform in (−k, k)."""
    stream = Stream(seed + 2)
    layers = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        w = ((2.0 * stream.uniforms(fan_in * fan_out) - 1.0) * bound).astype(np.float32)
        b = ((2.0 * stream.uniforms(fan_out) - 1.0) * bound).astype(np.float32)
        layers.append((w.reshape(fan_in, fan_out), b))
    return layers


def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The sample order of an epoch: Fisher–Yates from the end with stream seed+1000+epoch."""
    draws = Stream(seed + 1000 + epoch).draws(max(count - 1, 0)).tolist()
    order = list(range(count))
    for k, i in enumerate(range(count - 1, 0, -1)):
        j = draws[k] % (i + 1)
        order[i], order[j] = order[j], order[i]
    return np.asarray(order, dtype=np.int64)


def train_step(weights, velocities, x, y) -> float:
    """One SGD-with-momentum step on the batch (x, y); returns the batch's mean loss."""
    inputs = []  # the input of every layer
    h = x
    last = len(weights) - 1
    for index, (w, b) in enumerate(weights):
        inputs.append(h)
        h = h @ w + b
        if index < last:
            h = np.maximum(h, np.float32(0))
    batch = x.shape[0]
    rows = np.arange(batch)
    log_probabilities = h - h.max(axis=1, keepdims=True)
    log_probabilities -= np.log(np.exp(log_probabilities).sum(axis=1, keepdims=True))
    loss = float(-log_probabilities[rows, y].mean())

    upstream = np.exp(log_probabilities)
    upstream[rows, y] -= np.float32(1)
    upstream /= np.float32(batch)
    for index in range(last, -1, -1):
        w, b = weights[index]
        grad_w = inputs[index].T @ upstream
        grad_b = upstream.sum(axis=0)
        if index > 0:
            # The layer's input came out of a ReLU: pass gradient only where it was positive.
            upstream = (upstream @ w.T) * (inputs[index] > 0)
        v_w, v_b = velocities[index]
        v_w = MOMENTUM * v_w + grad_w
        v_b = MOMENTUM * v_b + grad_b
        velocities[index] = (v_w, v_b)
        weights[index] = (w - LEARNING_RATE * v_w, b - LEARNING_RATE * v_b)
    return loss


def train(seed: int, sample_count: int, steps: int, batch: int):
    """Yields (step, loss) for steps 0 … steps-1 of W1 on `sample_count` samples."""
    if steps <= 0:
        return
    x, y = samples(seed, 0, sample_count)
    weights = initial_weights(seed)
    velocities = [(np.zeros_like(w), np.zeros_like(b)) for w, b in weights]
    steps_per_epoch = sample_count // batch
    order = None
    for step in range(steps):
        epoch, within = divmod(step, steps_per_epoch)
        if within == 0:
            order = epoch_order(seed, epoch, sample_count)
        picked = order[within * batch:(within + 1) * batch]
        yield step, train_step(weights, velocities, x[picked], y[picked])


def dump(directory: str, seed: int, sample_count: int) -> None:
    os.makedirs(directory, exist_ok=True)
    x, y = samples(seed, 0, sample_count)
    x.astype("<f4").tofile(os.path.join(directory, "x.f32"))
    y.astype("<i4").tofile(os.path.join(directory, "y.i32"))
    flat = [part.ravel() for layer in initial_weights(seed) for part in layer]
    np.concatenate(flat).astype("<f4").tofile(os.path.join(directory, "init.f32"))


def main() -> int:
    parser = argparse.ArgumentParser(description="Workload W1 in numpy: prints `step t loss x` per step.")
    parser.add_argument("--steps", type=int, default=50, help="steps to train (default 50)")
    parser.add_argument("--samples", type=int, default=65536, help="data set size N (default 65536)")
    parser.add_argument("--seed", type=int, default=42, help="the workload's seed (default 42)")
    parser.add_argument("--batch", type=int, default=256, help="global batch B (default 256)")
    parser.add_argument("--dump-dir", help="also write x.f32, y.i32 and init.f32 here")
    arguments = parser.parse_args()
    if arguments.steps > 0 and arguments.samples < arguments.batch:
        parser.error(f"--samples {arguments.samples} is smaller than one batch of {arguments.batch}")
    if arguments.dump_dir:
        dump(arguments.dump_dir, arguments.seed, arguments.samples)
    for step, loss in train(arguments.seed, arguments.samples, arguments.steps, arguments.batch):
        print(f"step {step} loss {loss:.6f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
