#!/usr/bin/env python3
"""What each mode of running a step's shards buys: ``bp train -c default`` on 1 thread
and on 2, with the shards on worker processes, on worker threads or on bp alone,
on an idle machine and with one core kept busy by another process.

    python benchmarks/modes.py [--data-dir data] [--limit 30000] [--repeats 5] [--markdown out.md]

Each run is a real ``bp train -c default --epochs 1 --seed 0 --set
data.limit=LIMIT --set data.validation=0`` (the default recipe's
784-512-256-10 network, batch 256, augmentation shared out with the shards;
LIMIT / 256 steps), its own process, timed by its ``train_seconds`` (the
training steps: no data loading, no evaluation). The modes are chosen with
``BP_WORKERS``:

* ``1 thread``: ``--threads 1``, one shard (every mode is the same there);
* ``processes``, ``threads``, ``serial``: ``--threads 2``, ``BP_WORKERS=...``
  (``processes`` and ``threads`` still let the engine fall back to bp alone
  when that is faster; the steps each mode ran are reported);
* ``processes, pinned``, ``threads, pinned``: the same, every step in that
  mode (the placement's ``choose`` replaced in the child process): what the
  mode itself buys, apart from the placement's choices;
* ``auto``: ``--threads 2``, ``BP_WORKERS`` unset: what ``bp train`` does.

"Loaded" runs have one more process spinning on the CPU (``while True:
pass``), started before the run and killed after it. Every configuration
and load runs once per repeat, in an order rotated each repeat, so that a
drift in the machine's own load spreads over all of them. Prints medians and
the speed-up over ``1 thread`` under the same load (> 1: faster), and the
1-minute load average (``os.getloadavg()``) seen before the runs: other
processes on a shared machine count too. MNIST must be in ``--data-dir``
already (``bp download``), or pass ``--mirror``.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

CONFIGS = {  # name: (threads, BP_WORKERS or None, pinned)
    "1 thread": (1, None, False),
    "processes": (2, "processes", False),
    "processes, pinned": (2, "processes", True),
    "threads": (2, "threads", False),
    "threads, pinned": (2, "threads", True),
    "serial": (2, "serial", False),
    "auto": (2, None, False),
}
# bp train with every step in the first mode BP_WORKERS allows, never falling back to the
# caller alone: what the mode itself buys, apart from the placement's choices
PINNED = ("from bpcli.fast.parallel import placement\n"
          "def choose(self):\n"
          "    self.steps += 1\n"
          "    return self.modes[0]\n"
          "placement.ShardPlacement.choose = choose\n"
          "from bpcli.cli import main\n"
          "main()\n")
LOADS = ("idle", "loaded")
SPIN = "while True:\n    pass\n"


def train_once(name, args, folder, index):
    """One ``bp train`` run of configuration ``name``: (train_seconds, steps by mode)."""
    from bpcli.checkpoint import read_checkpoint

    threads, workers, pinned = CONFIGS[name]
    run_dir = os.path.join(folder, f"run{index}")
    env = {k: v for k, v in os.environ.items() if k != "BP_WORKERS"}
    if workers:
        env["BP_WORKERS"] = workers
    command = [sys.executable, "-c", PINNED if pinned else "from bpcli.cli import main; main()",
               "train", "-c", "default", "--epochs", "1", "--seed", "0", "--quiet",
               "--set", f"data.limit={args.limit}", "--set", "data.validation=0",
               "--threads", str(threads), "--run-dir", run_dir, "--data-dir", args.data_dir]
    if args.mirror:
        command += ["--mirror", args.mirror]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, timeout=1800)
    _, meta = read_checkpoint(os.path.join(run_dir, "last.npz"), arrays=False)
    return meta["train_seconds"], meta["steps_by_workers"]


def spinner():
    """Another process keeping one core busy (its own session, so that it is ours to kill)."""
    proc = subprocess.Popen([sys.executable, "-c", SPIN], start_new_session=True)
    time.sleep(0.3)  # running before the run starts
    return proc


def measure(args):
    """{(config, load): [seconds, ...]}, {(config, load): [steps by mode, ...]}, {load: [loadavg, ...]}."""
    seconds, steps_by_mode, loadavg = {}, {}, {load: [] for load in LOADS}
    names = list(CONFIGS)
    with tempfile.TemporaryDirectory(prefix="bp-modes-") as folder:
        index = 0
        for repeat in range(args.repeats):
            order = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in order:
                for load in LOADS:
                    loadavg[load].append(os.getloadavg()[0])
                    spin = spinner() if load == "loaded" else None
                    try:
                        took, steps = train_once(name, args, folder, index)
                    finally:
                        if spin is not None:
                            spin.kill()
                            spin.wait()
                    index += 1
                    seconds.setdefault((name, load), []).append(took)
                    steps_by_mode.setdefault((name, load), []).append(steps)
                    print(f"repeat {repeat + 1}/{args.repeats}  {name:9s} {load:6s} {took:6.2f} s  {steps}",
                          file=sys.stderr, flush=True)
    return seconds, steps_by_mode, loadavg


def share(steps_list, mode):
    """The share of steps run in ``mode``, over every run."""
    total = sum(sum(s.values()) for s in steps_list)
    return sum(s.get(mode, 0) for s in steps_list) / total if total else 0.0


def table(seconds, steps_by_mode, loadavg, args):
    lines = [f"`bp train -c default --epochs 1 --seed 0 --set data.limit={args.limit} --set data.validation=0`, "
             f"median train_seconds of {args.repeats} interleaved runs; speed-up: 1 thread's median / this "
             "median, under the same load. 1-minute load average before the runs: idle "
             f"{statistics.median(loadavg['idle']):.2f} (median; {min(loadavg['idle']):.2f}-"
             f"{max(loadavg['idle']):.2f}), loaded {statistics.median(loadavg['loaded']):.2f} "
             f"({min(loadavg['loaded']):.2f}-{max(loadavg['loaded']):.2f}), on {os.cpu_count()} CPUs.", "",
             "| mode (threads) | idle: s | idle: speed-up | loaded: s | loaded: speed-up | steps on processes / threads / serial (idle; loaded) |",
             "|---|---|---|---|---|---|"]
    base = {load: statistics.median(seconds[("1 thread", load)]) for load in LOADS}
    for name, (threads, _, _) in CONFIGS.items():
        cells = [f"{name} ({threads})"]
        for load in LOADS:
            med = statistics.median(seconds[(name, load)])
            cells += [f"{med:.2f}", f"{base[load] / med:.2f}x"]
        cells.append("; ".join(" / ".join(f"{share(steps_by_mode[(name, load)], m):.0%}" for m in ("processes", "threads", "serial"))
                               for load in LOADS))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--mirror", default=None, help="bp train --mirror (a local folder with MNIST's files)")
    parser.add_argument("--limit", type=int, default=30000, help="data.limit: training images per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--markdown", default=None, help="also write the table here")
    args = parser.parse_args()
    seconds, steps_by_mode, loadavg = measure(args)
    text = table(seconds, steps_by_mode, loadavg, args)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
