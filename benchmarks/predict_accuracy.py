"""Score a checkpoint on the sets ``benchmarks/predict_sets.py`` writes.

    python benchmarks/predict_accuracy.py CHECKPOINT FOLDER... [--json] [--per-digit]

A FOLDER is one set (it holds ``labels.csv``: ``file,label``) or a folder of
sets (its sub-folders that hold one). Each image goes through the same path
as ``bp predict``: ``bpcli.predict.predict_images`` (``load_digit``'s MNIST
preparation, then the model). An image that cannot be read counts as wrong
and is reported.
"""

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from bpcli.checkpoint import load_model
from bpcli.errors import BpError
from bpcli.predict import predict_images


def find_sets(folders):
    sets = []
    for folder in map(Path, folders):
        if (folder / "labels.csv").is_file():
            sets.append(folder)
        else:
            sets.extend(sorted(p.parent for p in folder.glob("*/labels.csv")))
    return sets


def read_labels(folder):
    with open(folder / "labels.csv", newline="") as f:
        return [(folder / row["file"], int(row["label"])) for row in csv.DictReader(f)]


def score_set(model, folder, batch=256):
    """Accuracy of ``model`` on one set: a dict ready for printing or JSON."""
    items = read_labels(folder)
    y = np.array([label for _, label in items], dtype=np.int64)
    pred = np.full(len(items), -1, dtype=np.int64)
    errors = []
    t0 = time.perf_counter()
    for start in range(0, len(items), batch):
        results, _ = predict_images(model, [path for path, _ in items[start:start + batch]])
        for i, r in enumerate(results, start):
            if r["digit"] is None:
                errors.append(r["error"])
            else:
                pred[i] = r["digit"]
    seconds = time.perf_counter() - t0
    correct = pred == y
    per_digit = {str(d): {"n": int((y == d).sum()),
                          "accuracy": float(correct[y == d].mean()) if (y == d).any() else None}
                 for d in range(10)}
    return {"set": folder.name, "folder": str(folder), "n": len(items),
            "accuracy": float(correct.mean()) if len(items) else None,
            "unreadable": len(errors), "errors": errors[:5],
            "ms_per_image": 1000 * seconds / max(1, len(items)), "per_digit": per_digit}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a .npz written by bp train (e.g. runs/latest/best.npz)")
    ap.add_argument("folders", nargs="+", help="a set folder (with labels.csv) or a folder of sets")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--per-digit", action="store_true", help="also print each digit's accuracy")
    args = ap.parse_args(argv)
    try:
        model = load_model(args.checkpoint)
    except BpError as err:
        sys.exit(f"Error: {err}")
    sets = find_sets(args.folders)
    if not sets:
        sys.exit("Error: no labels.csv found in " + ", ".join(args.folders)
                 + "; make the sets with benchmarks/predict_sets.py first")
    results = [score_set(model, folder) for folder in sets]
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "sets": results}, indent=2))
        return
    print(f"{'set':<12} {'n':>6} {'accuracy':>9} {'unreadable':>11} {'ms/image':>9}")
    for r in results:
        accuracy = "-" if r["accuracy"] is None else f"{r['accuracy']:.2%}"  # an empty labels.csv
        print(f"{r['set']:<12} {r['n']:>6} {accuracy:>9} {r['unreadable']:>11} {r['ms_per_image']:>9.1f}")
        if args.per_digit:
            print("    " + "  ".join(f"{d}:{v['accuracy']:.0%}" for d, v in r["per_digit"].items()
                                     if v["accuracy"] is not None))
        for e in r["errors"]:
            print(f"    {e}")


if __name__ == "__main__":
    main()
