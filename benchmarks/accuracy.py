"""Rerun bp's recipes over several seeds and BLAS kernels and write the time-to-accuracy
table: config, network, parameters, epochs, training FLOPs, wall time and test accuracy
as mean +- sd over seeds and kernels with the minimum, and the literature figure each
recipe answers.

    python benchmarks/accuracy.py --seeds 0-2 --kernels Haswell,SkylakeX,Sandybridge --jobs 2  # README's accuracies
    python benchmarks/accuracy.py smoke seed nielsen nielsen-ce-l2 fast simard-affine --seeds 0  # their times
    python benchmarks/accuracy.py default --seeds 0-9 --kernels Haswell,SkylakeX,Sandybridge
    python benchmarks/accuracy.py default --seeds 0-4 --baseline /path/to/bp-4e0bdb0/bin/bp
    python benchmarks/accuracy.py seed nielsen fast --markdown results.md

Each run is a fresh ``bp train -c configs/NAME.yaml --seed S --json`` on all cores,
one at a time; the wall time is the whole command's (start-up, data check, every
epoch's validation and checkpoints, the final test evaluation). ``best`` runs on
the first three seeds only (half an hour each). The test accuracy is the one
``bp train`` reports (its best-on-validation checkpoint on the test set), printed
beside that best validation accuracy: recipes are chosen on validation, and test
is only reported.

``--kernels`` runs every seed once under each of OpenBLAS's kernels named
(``OPENBLAS_CORETYPE`` in the run's environment; this CPU must be able to run
them): another machine's kernels sum in another order, and its bits of
training differ. Each run reports the kernels that actually ran, as bp's
checkpoint recorded them. Without it, runs take the kernels OpenBLAS picks.
``--jobs N`` runs N at once: the accuracies are the same bits whatever the
load, the wall times then not one run's alone.

``--baseline BP`` times that bp's own default recipe against bp's ``default``,
side by side: one pair of runs per seed (the baseline's, then bp's), under
the kernels OpenBLAS picks (``OPENBLAS_CORETYPE`` as in this environment),
each pair's ratio printed, so that "faster than before" is measured on one
machine at one time.

The MNIST cache defaults to a temp folder filled from the local copy in
../shared/mnist or $BP_TEST_MNIST, so nothing reaches the internet.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# config -> (what it answers, the figure reported there)
LADDER = {
    "smoke": ("a check that everything runs: 5,000 images, 2 epochs", "-"),
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


def machine():
    """The CPU's name, as /proc/cpuinfo or the platform gives it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].replace("(R)", "").split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def kernel_of(run_dir, env):
    """The OpenBLAS kernels a finished run trained under: its checkpoint's record (bp
    since it records them), else what threadpoolctl reports in a process of the same env."""
    with np_load(Path(run_dir) / "last.npz") as npz:
        meta = json.loads(npz["meta"].tobytes())
    recorded = meta.get("blas")
    if isinstance(recorded, dict) and recorded.get("kernel"):
        return recorded["kernel"]
    probe = "import numpy, threadpoolctl; print(threadpoolctl.threadpool_info()[0].get('architecture'))"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def np_load(path):
    import numpy as np  # bp's own dependency

    return np.load(path, allow_pickle=False)


def run(bp, config, seed, data_dir, run_dir, flags=(), kernel=None):
    """One ``bp train``, under OpenBLAS's ``kernel`` if named: its wall time, test and
    best validation accuracy, and the kernels that ran."""
    cmd = [*bp, "train", "-c", str(config), "--seed", str(seed), "--data-dir", data_dir,
           "--run-dir", str(run_dir), "--quiet", "--json", *flags]
    env = {**os.environ, "OPENBLAS_CORETYPE": kernel} if kernel else dict(os.environ)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{config} seed {seed}: bp train failed ({proc.returncode}): {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    return {"seed": seed, "wall_seconds": wall, "test_accuracy": doc["test_accuracy"],
            "val_accuracy": doc["val_accuracy"], "epochs": doc["epochs"], "kernel": kernel_of(run_dir, env)}


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
            "flops": training_flops(hidden, epochs * n_train), "seeds": sorted({r["seed"] for r in runs}),
            "kernels": list(dict.fromkeys(r["kernel"] for r in runs)), "runs": runs,
            "test": accs, "wall": walls, "test_min": min(accs), "test_mean": statistics.mean(accs),
            "wall_mean": statistics.mean(walls)}


def seed_range(seeds):
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def by_seed_and_kernel(row):
    """A recipe's runs as a grid: a line per seed, a column per kernel, each cell the
    test accuracy (best validation accuracy in brackets)."""
    kernels = row["kernels"]
    lines = [f"`{row['config']}`: test accuracy (best validation) by seed and OpenBLAS kernels",
             "", "| seed | " + " | ".join(kernels) + " |", "|---|" + "---|" * len(kernels)]
    for seed in row["seeds"]:
        cells = {r["kernel"]: f"{percent(r['test_accuracy'])} ({percent(r['val_accuracy'])})"
                 for r in row["runs"] if r["seed"] == seed}
        lines.append(f"| {seed} | " + " | ".join(cells.get(k, "") for k in kernels) + " |")
    per_kernel = [statistics.mean(r["test_accuracy"] for r in row["runs"] if r["kernel"] == k) for k in kernels]
    lines.append("| mean | " + " | ".join(percent(m) for m in per_kernel) + " |")
    return "\n".join(lines)


def markdown(rows, baseline):
    lines = ["| config | network | parameters | epochs | training FLOPs | wall time | test accuracy "
             "| seeds | answers |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        what, figure = LADDER[r["config"]]
        net = "-".join(map(str, [784, *r["hidden"], 10]))
        seeds = seed_range(r["seeds"])
        if len(r["kernels"]) > 1:
            seeds += f" x {', '.join(r['kernels'])}"
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
    ap.add_argument("--kernels", help="OpenBLAS kernels to run every seed under, e.g. Haswell,SkylakeX,"
                    "Sandybridge (OPENBLAS_CORETYPE; default: the ones OpenBLAS picks)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (default 1). The accuracies are the "
                    "same bits whatever the load; the wall times are then not one run's alone (--baseline's "
                    "pairs always run one at a time)")
    ap.add_argument("--baseline", help="another bp executable (e.g. commit 4e0bdb0's, in a venv of its "
                    "own): its default recipe and bp's are timed in pairs, one per seed, side by side")
    ap.add_argument("--data-dir", help="MNIST cache (default: a temp folder filled from the local copy)")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    unknown = [c for c in args.configs if c not in LADDER]
    if unknown:
        ap.error(f"unknown config(s) {unknown}; choose from {list(LADDER)}")
    seeds = parse_seeds(args.seeds)
    kernels = args.kernels.split(",") if args.kernels else [None]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or os.path.join(tmp, "data")
        env_mirror = {**os.environ, "BP_MNIST_MIRROR": os.environ.get("BP_MNIST_MIRROR") or default_mnist()}
        subprocess.run([*bp_command(), "download", "--data-dir", data_dir], env=env_mirror, check=True,
                       capture_output=True)
        runs_dir = Path(tmp) / "runs"
        rows, pairs = [], []
        for name in args.configs:
            config, flags, hidden, n_train = recipe(name)
            def one(seed_kernel, name=name, config=config, flags=flags):
                seed, kernel = seed_kernel
                r = run(bp_command(), config, seed, data_dir, runs_dir / f"{name}-{seed}-{kernel}", flags, kernel)
                print(f"{name:15s} seed {seed} {r['kernel']:12s}: test {percent(r['test_accuracy'])}  "
                      f"val {percent(r['val_accuracy'])}  {r['epochs']} epochs  {r['wall_seconds']:.1f} s",
                      flush=True)
                return r

            todo = [(seed, kernel) for seed in seeds[:MAX_SEEDS.get(name, len(seeds))] for kernel in kernels]
            with ThreadPoolExecutor(args.jobs) as pool:
                runs = list(pool.map(one, todo))
            rows.append(summary(name, runs, hidden, n_train))
        if args.baseline:
            base_cfg = Path(args.baseline).resolve().parents[2] / "configs" / "default.yaml"
            if not base_cfg.is_file():
                base_cfg = "default"
            for seed in seeds:
                b = run([args.baseline], base_cfg, seed, data_dir, runs_dir / f"base-{seed}")
                m = run(bp_command(), recipe("default")[0], seed, data_dir, runs_dir / f"pair-{seed}")
                pairs.append((b, m))
                print(f"pair seed {seed} ({m['kernel']}): bp {m['wall_seconds']:.1f} s (test "
                      f"{percent(m['test_accuracy'])}), baseline {b['wall_seconds']:.1f} s (test "
                      f"{percent(b['test_accuracy'])}): {m['wall_seconds'] / b['wall_seconds']:.2f}x", flush=True)
    baseline = summary("default", [b for b, _ in pairs], [512, 256], 55_000) if pairs else None
    table = markdown(rows, baseline)
    grids = [by_seed_and_kernel(r) for r in rows if len(r["kernels"]) > 1]
    print()
    shared = f" ({args.jobs} runs at once: wall times are not one run's)" if args.jobs > 1 else ""
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}; {machine()}, {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d')}{shared}")
    print(table)
    for grid in grids:
        print("\n" + grid)
    for r in rows:
        print(f"\n{r['config']}: test {mean_sd(r['test'], percent)} over seeds {seed_range(r['seeds'])} and "
              f"kernels {', '.join(r['kernels'])} (min {percent(r['test_min'])}); best validation "
              f"{mean_sd([x['val_accuracy'] for x in r['runs']], percent)}")
    if pairs:
        mine = statistics.mean(m["wall_seconds"] for _, m in pairs)
        print(f"\ndefault wall, bp / baseline ({len(pairs)} pairs side by side, means): {mine:.1f} s / "
              f"{baseline['wall_mean']:.1f} s = {mine / baseline['wall_mean']:.2f}x (target <= 0.40x); per pair: "
              + ", ".join(f"{m['wall_seconds'] / b['wall_seconds']:.2f}x" for b, m in pairs))
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join([table, *grids]) + "\n")


if __name__ == "__main__":
    main()
