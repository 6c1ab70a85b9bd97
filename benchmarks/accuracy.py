"""Rerun bp's recipes over several seeds and write the time-to-accuracy table: config,
network, parameters, epochs, training FLOPs, wall time and test accuracy as mean +- sd,
and the literature figure each recipe answers.

    python benchmarks/accuracy.py --seeds 0-4                  # the README table (~1 h 45 min on 2 cores)
    python benchmarks/accuracy.py default --seeds 0-4 --baseline /path/to/bp-4e0bdb0/bin/bp
    python benchmarks/accuracy.py seed nielsen fast --markdown results.md

Each run is a fresh ``bp train -c configs/NAME.yaml --seed S --json`` on all cores,
one at a time; the wall time is the whole command's (start-up, data check, every
epoch's validation and checkpoints, the final test evaluation). ``best`` runs on
the first three seeds only (half an hour each). ``--baseline BP`` also times that
bp's own default recipe, one run per seed interleaved with bp's, so that "faster
than before" is measured side by side. The test accuracy is the one ``bp train``
reports (its best-on-validation checkpoint on the test set): recipes are chosen
on validation, and test is only reported.

The MNIST cache defaults to a temp folder filled from the local copy in
../shared/mnist or $BP_TEST_MNIST, so nothing reaches the internet.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# config -> (what it answers, the figure reported there)
LADDER = {
    "seed": ("the backprop explanation's 784-16-16-10 sigmoid network", ">= 94% (target)"),
    "nielsen": ("Nielsen, NNDL ch. 1: 784-30-10 sigmoid, quadratic cost", "~95%"),
    "nielsen-ce-l2": ("Nielsen, NNDL ch. 3: 784-100-10, cross-entropy + L2", "98.04%"),
    "fast": ("PyTorch / scikit-learn MLP recipes", "~97.5-98%"),
    "simard-affine": ("Simard et al. 2003: 800 hidden units + affine distortions", "98.9%"),
    "default": ("bp's main job", ">= 99.0% every seed, <= 0.4x bp 4e0bdb0's wall (target)"),
    "best": ("Simard et al. 2003 elastic 99.3%; Ciresan et al. 2010 1000-500 MLP 99.44%",
             ">= 99.50% seed 0, mean >= 99.45% (target)"),
    "speedrun-3x512": ("legio201516/mnist-speedrun, a NumPy 3x512 MLP: 10 epochs", "28.7 s on its own machine"),
}
# rows that are not a shipped recipe: the recipe they start from and the flags that make them
VARIANTS = {
    # the speedrun's network and epochs on bp's plain recipe, all 60,000 training images
    "speedrun-3x512": ("fast", ["--hidden", "512,512,512", "--epochs", "10", "--set", "data.validation=0"]),
}
MAX_SEEDS = {"best": 3}
N_TRAIN = 60_000


def parse_seeds(text):
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5' -> [0, 2, 5]."""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds.extend(range(int(lo), int(hi or lo) + 1))
    return seeds


def n_params(hidden):
    sizes = [784, *hidden, 10]
    return sum(m * n + n for m, n in zip(sizes[:-1], sizes[1:]))


def training_flops(hidden, examples):
    """Multiply-adds x 2 of training on ``examples`` examples: every layer's forward
    product and weight gradient, and every layer's error below it but the input's."""
    sizes = [784, *hidden, 10]
    products = [m * n for m, n in zip(sizes[:-1], sizes[1:])]
    return 2 * examples * (3 * sum(products) - products[0])


def default_mnist():
    for candidate in (os.environ.get("BP_TEST_MNIST"), REPO.parent / "shared" / "mnist"):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return str(candidate)
    sys.exit("no local MNIST copy: set BP_TEST_MNIST to a folder with the four .gz files")


def bp_command():
    exe = Path(sys.executable).with_name("bp")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bpcli.cli"]


def run(bp, config, seed, data_dir, run_dir, flags=()):
    cmd = [*bp, "train", "-c", str(config), "--seed", str(seed), "--data-dir", data_dir,
           "--run-dir", str(run_dir), "--quiet", "--json", *flags]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{config} seed {seed}: bp train failed ({proc.returncode}): {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    return {"seed": seed, "wall_seconds": wall, "test_accuracy": doc["test_accuracy"], "epochs": doc["epochs"]}


def recipe(name):
    """(config file, extra flags, hidden sizes, training images) of a ladder row."""
    import yaml  # bp's own dependency

    base, flags = VARIANTS.get(name, (name, []))
    with open(REPO / "configs" / f"{base}.yaml") as f:
        tree = yaml.safe_load(f) or {}
    hidden = (tree.get("model") or {}).get("hidden", [512, 256])
    validation = (tree.get("data") or {}).get("validation", 5000)
    if "--hidden" in flags:
        hidden = [int(h) for h in flags[flags.index("--hidden") + 1].split(",")]
    if "data.validation=0" in flags:
        validation = 0
    return REPO / "configs" / f"{base}.yaml", flags, hidden, N_TRAIN - validation


def mean_sd(values, fmt):
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.mean(values))} +- {fmt(statistics.stdev(values))}"


def percent(x):
    return f"{100 * x:.2f}%"


def summary(name, runs, hidden, n_train):
    accs = [r["test_accuracy"] for r in runs]
    walls = [r["wall_seconds"] for r in runs]
    epochs = runs[0]["epochs"]
    return {"config": name, "hidden": hidden, "params": n_params(hidden), "epochs": epochs,
            "flops": training_flops(hidden, epochs * n_train), "seeds": [r["seed"] for r in runs],
            "test": accs, "wall": walls, "test_min": min(accs), "test_mean": statistics.mean(accs),
            "wall_mean": statistics.mean(walls)}


def markdown(rows, baseline):
    lines = ["| config | network | parameters | epochs | training FLOPs | wall time | test accuracy "
             "| seeds | answers |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        what, figure = LADDER[r["config"]]
        net = "-".join(map(str, [784, *r["hidden"], 10]))
        seeds = f"{r['seeds'][0]}-{r['seeds'][-1]}" if len(r["seeds"]) > 1 else str(r["seeds"][0])
        lines.append(f"| `{r['config']}` | {net} | {r['params']:,} | {r['epochs']} | {r['flops']:.2e} | "
                     f"{mean_sd(r['wall'], lambda s: f'{s:.1f} s')} | "
                     f"{mean_sd(r['test'], percent)} (min {percent(r['test_min'])}) | {seeds} | "
                     f"{what}: {figure} |")
    if baseline:
        lines.append(f"| bp 4e0bdb0 `default` (side by side) | 784-512-256-10 | 535,818 | 27 | "
                     f"{training_flops([512, 256], 27 * 55_000):.2e} | "
                     f"{mean_sd(baseline['wall'], lambda s: f'{s:.1f} s')} | "
                     f"{mean_sd(baseline['test'], percent)} (min {percent(baseline['test_min'])}) | "
                     f"{len(baseline['test'])} seeds | the time before |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", default=list(LADDER), help="configs to run (default: all)")
    ap.add_argument("--seeds", default="0", help="seeds, e.g. 0-4 or 0,1,2 (best: the first three)")
    ap.add_argument("--baseline", help="another bp executable (e.g. commit 4e0bdb0's, in a venv of its "
                    "own): its default recipe is timed once per seed, interleaved with bp's")
    ap.add_argument("--data-dir", help="MNIST cache (default: a temp folder filled from the local copy)")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    unknown = [c for c in args.configs if c not in LADDER]
    if unknown:
        ap.error(f"unknown config(s) {unknown}; choose from {list(LADDER)}")
    seeds = parse_seeds(args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or os.path.join(tmp, "data")
        env_mirror = {**os.environ, "BP_MNIST_MIRROR": os.environ.get("BP_MNIST_MIRROR") or default_mnist()}
        subprocess.run([*bp_command(), "download", "--data-dir", data_dir], env=env_mirror, check=True,
                       capture_output=True)
        runs_dir = Path(tmp) / "runs"
        rows, base_runs = [], []
        for name in args.configs:
            config, flags, hidden, n_train = recipe(name)
            runs = []
            for seed in seeds[:MAX_SEEDS.get(name, len(seeds))]:
                if args.baseline and name == "default":
                    base_cfg = Path(args.baseline).resolve().parents[2] / "configs" / "default.yaml"
                    if not base_cfg.is_file():
                        base_cfg = "default"
                    b = run([args.baseline], base_cfg, seed, data_dir, runs_dir / f"base-{seed}")
                    base_runs.append(b)
                    print(f"{'base default':15s} seed {seed}: test {percent(b['test_accuracy'])}  "
                          f"{b['wall_seconds']:.1f} s", flush=True)
                r = run(bp_command(), config, seed, data_dir, runs_dir / f"{name}-{seed}", flags)
                runs.append(r)
                print(f"{name:15s} seed {seed}: test {percent(r['test_accuracy'])}  {r['epochs']} epochs  "
                      f"{r['wall_seconds']:.1f} s", flush=True)
            rows.append(summary(name, runs, hidden, n_train))
    baseline = summary("default", base_runs, [512, 256], 55_000) if base_runs else None
    table = markdown(rows, baseline)
    print()
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}; {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d')}")
    print(table)
    if baseline:
        mine = next(r for r in rows if r["config"] == "default")
        print(f"\ndefault wall, bp / bp 4e0bdb0 (mean over the same seeds, side by side): "
              f"{mine['wall_mean']:.1f} s / {baseline['wall_mean']:.1f} s = "
              f"{mine['wall_mean'] / baseline['wall_mean']:.2f}x (target <= 0.40x)")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
