#!/usr/bin/env python3
"""How the engine's ``ShardPlacement`` spreads a training's steps over the ways to run its shards,
fed simulated step times (no training runs: seconds).

    python benchmarks/placement.py [--runs 300] [--steps 2345]

Each case gives every way ("processes", "threads", "serial") a time a step, some
of them noisy or spiky, as measured on this project's VM (a worker on a busy
core: ~0.48 ms a step, but ~4.4 ms one step in five or ten, against ~0.69 ms for
bp alone), and runs ``ShardPlacement`` over a 5-epoch training of network a (2,345 steps),
``--runs`` times with seeds 0, 1, ...: the median, 90th percentile and largest
count of steps on the way it names, and how often the way changed. It reads bp's
internals (``bpcli.fast.parallel.placement``), like ``step_gap.py``.
"""

import argparse

import numpy as np

from bpcli.fast.parallel.placement import ShardPlacement

BOTH, ALL = ["processes", "serial"], ["processes", "threads", "serial"]


def spiky(every):
    """A worker on a busy core: 0.48 ms, but 4.4 ms one step in ``every`` at random."""
    return lambda mode, rng: {"serial": 0.69, "threads": 0.8}.get(mode) or (4.4 if rng.random() < 1 / every else 0.48)


def hiccups(mode, rng):
    """An idle machine whose VM holds a worker back now and then: 2 ms one step in 30."""
    return {"serial": 0.7, "threads": 0.6}.get(mode) or (2.0 if rng.random() < 1 / 30 else 0.45)


def noisy(times, spread=0.25):
    return lambda mode, rng: times[mode] * rng.uniform(1 - spread, 1 + spread)


CASES = [  # (what, the ways, step time of (mode, rng), the way counted)
    ("a worker on a busy core, 4.4 ms one step in 5", BOTH, spiky(5), "processes"),
    ("the same, with worker threads too", ALL, spiky(5), "processes"),
    ("a worker on a busy core, 4.4 ms one step in 10", BOTH, spiky(10), "processes"),
    ("the same, with worker threads too", ALL, spiky(10), "processes"),
    ("idle: processes fastest, every way +-25%", ALL,
     noisy({"processes": 0.46, "threads": 0.6, "serial": 0.7}), "processes"),
    ("idle, but a worker's step takes 2 ms one in 30 (the VM's hiccups)", ALL, hiccups, "processes"),
    ("the same, with bp alone running first: processes must win its way back", ["serial", "processes"],
     hiccups, "processes"),
    ("two ways equally fast, +-35%", BOTH, noisy({"processes": 0.5, "serial": 0.5}, 0.35), "processes"),
]


def run(modes, timing, steps, seed):
    """The ways the steps ran in, one run."""
    rng, placement, ran = np.random.default_rng(seed), ShardPlacement(modes), []
    for _ in range(steps):
        mode = placement.choose()
        ran.append(mode)
        placement.record(mode, timing(mode, rng))
    return ran


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--steps", type=int, default=2345)
    args = ap.parse_args()
    for what, modes, timing, counted in CASES:
        kept, changes = [], []
        for seed in range(args.runs):
            ran = run(modes, timing, args.steps, seed)
            kept.append(ran.count(counted))
            changes.append(sum(a != b for a, b in zip(ran, ran[1:])))
        kept = np.array(kept)
        print(f"{what} ({', '.join(modes)}): steps on {counted}: median {np.median(kept):.0f}, "
              f"90th percentile {np.percentile(kept, 90):.0f}, most {kept.max()}; "
              f"changes of way: median {np.median(changes):.0f}")


if __name__ == "__main__":
    main()
