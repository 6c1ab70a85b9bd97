"""Rerun bp's config ladder and write the Results table: config, parameters, epochs, wall time,
test accuracy, and the literature figure each config reproduces.

    python benchmarks/accuracy.py                       # every config, ~20 minutes on 2 cores
    python benchmarks/accuracy.py seed nielsen fast     # some of them
    python benchmarks/accuracy.py --markdown results.md --data-dir DIR

Each run is a fresh ``bp train -c configs/NAME.yaml --json`` on all cores, one at a
time (the wall times are the whole command's, download check and final test
evaluation included). The MNIST cache defaults to a temp folder filled from the
local copy in ../shared/mnist or $BP_TEST_MNIST, so nothing reaches the internet.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# config -> (what it reproduces, the figure reported there)
LADDER = {
    "seed": ("the backprop explanation's 784-16-16-10 sigmoid network", ">= 94% (target)"),
    "nielsen": ("Nielsen, NNDL ch. 1: 784-30-10 sigmoid, quadratic cost", "~95%"),
    "nielsen-ce-l2": ("Nielsen, NNDL ch. 3: 784-100-10, cross-entropy + L2", "98.04%"),
    "fast": ("PyTorch / scikit-learn MLP recipes", "~97.5-98%"),
    "simard-affine": ("Simard et al. 2003: 800 hidden units + affine distortions", "98.9%"),
    "default": ("bp's recommended recipe (augmented)", ">= 99.0% in <= 60 s (target)"),
    "best": ("Simard et al. 2003 elastic 99.3%; Ciresan et al. 2010 1000-500 MLP 99.44%", ">= 99.4% (target)"),
}


def n_params(hidden):
    sizes = [784, *hidden, 10]
    return sum(m * n + n for m, n in zip(sizes[:-1], sizes[1:]))


def default_mnist():
    for candidate in (os.environ.get("BP_TEST_MNIST"), REPO.parent / "shared" / "mnist"):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return str(candidate)
    sys.exit("no local MNIST copy: set BP_TEST_MNIST to a folder with the four .gz files")


def bp_command():
    exe = Path(sys.executable).with_name("bp")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bpcli.cli"]


def run_config(name, data_dir, runs_dir):
    config = REPO / "configs" / f"{name}.yaml"
    cmd = [*bp_command(), "train", "-c", str(config), "--data-dir", data_dir,
           "--run-dir", str(Path(runs_dir) / name), "--quiet", "--json"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name}: bp train failed ({proc.returncode}): {proc.stderr.strip()}")
    return {"config": name, "wall_seconds": wall, **json.loads(proc.stdout)}


def hidden_of(name):
    import yaml  # bp's own dependency

    with open(REPO / "configs" / f"{name}.yaml") as f:
        tree = yaml.safe_load(f) or {}
    return (tree.get("model") or {}).get("hidden", [256, 128])


def markdown(rows):
    lines = ["| config | network | parameters | epochs | wall time | test accuracy | literature |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        what, figure = LADDER[r["config"]]
        net = "-".join(map(str, [784, *r["hidden"], 10]))
        lines.append(f"| `{r['config']}` | {net} | {n_params(r['hidden']):,} | {r['epochs']} | "
                     f"{r['wall_seconds']:.0f} s | {r['test_accuracy']:.2%} | {what}: {figure} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", default=list(LADDER), help="configs to run (default: all)")
    ap.add_argument("--data-dir", help="MNIST cache (default: a temp folder filled from the local copy)")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    unknown = [c for c in args.configs if c not in LADDER]
    if unknown:
        ap.error(f"unknown config(s) {unknown}; choose from {list(LADDER)}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or os.path.join(tmp, "data")
        env_mirror = {**os.environ, "BP_MNIST_MIRROR": os.environ.get("BP_MNIST_MIRROR") or default_mnist()}
        subprocess.run([*bp_command(), "download", "--data-dir", data_dir], env=env_mirror, check=True,
                       capture_output=True)
        rows = []
        for name in args.configs:
            r = run_config(name, data_dir, os.path.join(tmp, "runs"))
            r["hidden"] = hidden_of(name)
            rows.append(r)
            print(f"{name:15s} test {r['test_accuracy']:.2%}  {r['epochs']} epochs  {r['wall_seconds']:.1f} s",
                  flush=True)
    table = markdown(rows)
    print()
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}; {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d')}")
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
