#!/usr/bin/env python3
"""Where a step of network a goes beyond the GEMM-only floor, on one thread.

    taskset -c 0 python benchmarks/step_gap.py [--data-dir data] [--epochs 5] [--calls]

Times, in one process: the floor's matrix products (feedforward and backprop
apart, as ``benchmarks/run.py`` times them together), then a real training
run of network a (784-128-64-10 ReLU, softmax + cross-entropy, SGD momentum
0.9, batch 128, 1 thread) with bp's own feedforward, backprop and update
timed as they run, and the floor again. Prints microseconds a step. It reads
bp's internals (``bpcli.fast``), so it belongs with the engine's code, not
its command line; MNIST must be in ``--data-dir`` already (``bp download``).
Run it pinned, on a quiet machine.
"""

import argparse
import collections
import json
import os
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads (bpcli imports it)

import bpcli.fast as fast  # noqa: E402
from bpcli import train as training  # noqa: E402
from bpcli.config import resolve  # noqa: E402
from bpcli.data import load_mnist  # noqa: E402
from bpcli.fast import shard as shard_module  # noqa: E402
from bpcli.fast.shard import Shard  # noqa: E402

NETWORK_A = ["model.hidden=[128,64]", "model.activation=relu", "model.output=softmax",
             "model.loss=cross_entropy", "model.init=auto", "model.dropout=0", "train.momentum=0.9",
             "train.nesterov=false", "train.lr=0.1", "train.batch_size=128", "train.schedule=constant",
             "train.warmup_epochs=0", "train.weight_decay=0", "train.label_smoothing=0",
             "train.augment=false", "data.validation=0"]
BATCH, INKED = 128, 717  # the pixels inked in some training image: the first layer's inputs


def floor_timer():
    """(feedforward, backprop): the floor's products of one step, as ``run.py`` times them."""
    from run import FLOOR_PRODUCTS  # (benchmarks/, this script's folder, is on sys.path)

    scope = {}
    exec(FLOOR_PRODUCTS, scope)  # a script for a subprocess there; its function here
    return scope["floor_products"]([784, 128, 64, 10], BATCH, INKED)


def median_us(f, n=2000):
    for _ in range(50):
        f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2] * 1e6


def clocked(f, totals, key):
    """f, adding the seconds of each call to ``totals[key]``."""
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t
    return wrapper


def timed(owner, name, totals, key=None):
    """Wrap ``owner.name`` so that its calls add their seconds to ``totals[key or name]``."""
    setattr(owner, name, clocked(getattr(owner, name), totals, key or name))


# A shard's calls, by what they compute: its prepared products (lists by layer) and kernels
PRODUCTS = {"z_of": "z += a W (product)", "dW_of": "dC/dW (product)", "delta_below": "delta below (product)",
            "b_rows": "z = b (bias rows)", "db_of": "dC/db"}
KERNELS = {"f": "activation", "output": "softmax", "fprime": "activation'"}


def time_calls(totals):
    """Every Shard made from now on times each of its calls into ``totals`` (by layer)."""
    made = Shard.__init__

    def init(shard, *args, **kwargs):
        made(shard, *args, **kwargs)
        for name, what in PRODUCTS.items():
            calls = getattr(shard, name)
            for layer, product in enumerate(calls):
                if product is not None:
                    calls[layer] = clocked(product, totals, f"{what}, layer {layer}")
        for name, what in KERNELS.items():
            timed(shard, name, totals, what)
    Shard.__init__ = init
    timed(shard_module, "output_delta", totals, "output error")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="data", help="where MNIST is (default: data)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--calls", action="store_true",
                    help="also time each of a step's calls (each timing adds ~0.3 us to the step)")
    args = ap.parse_args()
    feedforward, backprop = floor_timer()
    before = median_us(feedforward), median_us(backprop)
    totals = collections.Counter()
    for owner, name in ((fast.Engine, "train_batch"), (Shard, "forward"), (Shard, "backward"),
                        (fast.Engine, "_finish")):
        timed(owner, name, totals)
    calls = collections.Counter()
    if args.calls:
        time_calls(calls)
    cfg = resolve(None, NETWORK_A + [f"train.epochs={args.epochs}"])
    data = load_mnist(args.data_dir, offline=True)
    with tempfile.TemporaryDirectory() as tmp:
        training.train(cfg, data, os.path.join(tmp, "run"), threads=1)
        with open(os.path.join(tmp, "run", "metrics.jsonl"), encoding="utf-8") as f:
            epochs = [json.loads(line) for line in f]
    steps = -(-60_000 // BATCH) * args.epochs
    after = median_us(feedforward), median_us(backprop)
    floor = [(x + y) / 2 for x, y in zip(before, after)]
    step = sorted(e["train_seconds"] for e in epochs)[len(epochs) // 2] / -(-60_000 // BATCH) * 1e6
    inside = totals["forward"] + totals["backward"] + totals["_finish"]
    print(f"floor: feedforward {floor[0]:.0f} us, backprop {floor[1]:.0f} us, a step {sum(floor):.0f} us "
          f"({BATCH / sum(floor) * 1e6:,.0f} samples/s)")
    print(f"bp:    feedforward {totals['forward'] / steps * 1e6:.0f} us, backprop "
          f"{totals['backward'] / steps * 1e6:.0f} us, update {totals['_finish'] / steps * 1e6:.0f} us, "
          f"the rest of train_batch {(totals['train_batch'] - inside) / steps * 1e6:.0f} us")
    print(f"       a step {step:.0f} us (median epoch, the loop included): {sum(floor) / step:.0%} of the floor")
    if args.calls:
        products = sum(v for k, v in calls.items() if "(product)" in k)
        print(f"bp's calls, us a step (the products: {products / steps * 1e6:.0f} us; "
              f"the floor's: {sum(floor):.0f} us):")
        for key, seconds in sorted(calls.items(), key=lambda kv: -kv[1]):
            print(f"  {seconds / steps * 1e6:6.1f}  {key}")


if __name__ == "__main__":
    main()
