"""``bp runs``: the runs under the runs root and how each ended, newest first.

Like ``mlflow runs list`` without a server: everything comes from the files a
run dir already holds. ``result.json`` says how a run ended (finished,
interrupted, diverged); a run whose dir is locked by a live process is
running; one with neither ended without saying so (killed, or a machine that
went down): it is listed as interrupted, and ``bp train --resume`` continues it
from its ``last.npz``. A run's files are read with the same care as any file
from outside: a damaged one blanks that field, never the listing.
"""

import json
import os
from datetime import datetime

from . import rundir
from .fsutil import open_untrusted
from .errors import BpError

MAX_FILE = 4 << 20  # bytes read from any one file of a run (metrics of thousands of epochs fit)


def _read(path):
    try:
        f, _ = open_untrusted(path, "file", max_bytes=MAX_FILE)
    except BpError:
        return None
    with f:
        return f.read().decode("utf-8", "replace")


def _json(path):
    text = _read(path)
    try:
        doc = json.loads(text) if text else None
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _metrics(path):
    rows = []
    for line in (_read(path) or "").splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _config(path):
    import yaml

    text = _read(path)
    try:
        doc = yaml.safe_load(text) if text else None
    except (yaml.YAMLError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _number(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _network(config):
    try:
        m = config["model"]
        return "-".join(str(n) for n in [784, *m["hidden"], 10]) + f" {m['activation']}"
    except (KeyError, TypeError):
        return None


def describe(run_dir, latest=None):
    """One run as a dict: name, started, network, epochs done/planned, best validation
    accuracy, test accuracy, seconds, state, and whether it is ``latest``."""
    config = _config(os.path.join(run_dir, "config.yaml"))
    metrics = _metrics(os.path.join(run_dir, "metrics.jsonl"))
    result = _json(os.path.join(run_dir, "result.json"))
    if rundir.in_use(run_dir):
        state = "running"
    elif result and result.get("state") in ("finished", "interrupted", "diverged"):
        state = result["state"]
    else:
        state = "interrupted"
    try:
        planned = config["train"]["epochs"]
    except (KeyError, TypeError):
        planned = None
    vals = [v for v in (_number(m.get("val_accuracy")) for m in metrics) if v is not None]
    seconds = (result or {}).get("seconds") if state == "finished" else None
    if seconds is None and metrics:
        seconds = sum(_number(m.get("seconds")) or 0.0 for m in metrics)
    try:
        started = datetime.fromtimestamp(os.stat(run_dir).st_mtime if config is None else
                                         os.stat(os.path.join(run_dir, "config.yaml")).st_mtime)
    except OSError:
        started = None
    return {
        "name": os.path.basename(os.path.normpath(run_dir)),
        "run_dir": run_dir,
        "started": started.isoformat(timespec="seconds") if started else None,
        "network": _network(config),
        "epochs_done": len(metrics),
        "epochs_planned": _number(planned),
        "best_val_accuracy": max(vals) if vals else None,
        "test_accuracy": _number((result or {}).get("test_accuracy")),
        "seconds": _number(seconds),
        "state": state,
        "has_model": os.path.isfile(os.path.join(run_dir, "best.npz")),
        "latest": latest is not None and os.path.realpath(run_dir) == latest,
    }


def list_runs(root=None):
    """Every run dir directly under the runs root, newest first."""
    root = root or rundir.runs_root()
    link = os.path.join(root, rundir.LATEST)
    latest = os.path.realpath(link) if os.path.islink(link) else None
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise BpError(f"cannot list the runs root {root}: {err.strerror}; set BP_RUNS_DIR") from None
    runs = [describe(e.path, latest) for e in entries
            if e.name != rundir.LATEST and e.is_dir(follow_symlinks=False)
            and (rundir.holds_a_run(e.path) or os.path.exists(os.path.join(e.path, rundir.LOCK_NAME)))]
    # a run elsewhere (--run-dir ../exp/foo) that latest points at is listed too
    if latest and os.path.isdir(latest) and not any(r["latest"] for r in runs):
        runs.append(describe(latest, latest))
    runs.sort(key=lambda r: (r["started"] or "", r["name"]), reverse=True)
    return runs


def _pct(x):
    return "-" if x is None else f"{x:.2%}"


def render(runs, root):
    if not runs:
        return f"no runs under {root} yet: start one with 'bp train'"
    header = ("", "run", "started", "network", "epochs", "best val", "test", "time", "state")
    rows = [header]
    for r in runs:
        epochs = f"{r['epochs_done']}/{r['epochs_planned'] if r['epochs_planned'] is not None else '?'}"
        time_ = "-" if r["seconds"] is None else f"{r['seconds']:.1f}s"
        rows.append(("*" if r["latest"] else "", r["name"], (r["started"] or "-").replace("T", " "),
                     r["network"] or "-", epochs, _pct(r["best_val_accuracy"]), _pct(r["test_accuracy"]),
                     time_, r["state"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + ["", f"* = {os.path.join(root, rundir.LATEST)}, the default model"])
