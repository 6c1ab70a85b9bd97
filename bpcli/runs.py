"""``bp runs``: the runs under the runs root and how each ended, newest first.

Like ``mlflow runs list`` without a server: everything comes from the files a
run dir already holds. The run record (``record.py``) says how a run ended,
in one of its states; a run whose dir is locked by a live process is running;
one whose record still says running but that nobody holds ended without saying
so (killed, or a machine that went down): it is listed as interrupted, and
``bp train --resume`` continues it from its ``last.npz``. A run's files are read
with the same care as any file from outside: a damaged one blanks that field,
never the listing, and no text from them reaches the terminal unescaped.
"""

import json
import os
from datetime import datetime

from . import record, rundir
from .config import RULES, describe_network
from .fsutil import one_line, read_text, shown_path
from .errors import BpError
from .progress import percent

MAX_FILE = 4 << 20  # bytes read from any one file of a run (metrics of thousands of epochs fit)


def _read(path):
    return read_text(path, MAX_FILE)


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
    from .config import load_yaml_text

    text = _read(path)
    try:
        doc = load_yaml_text(text) if text else None
    except BpError:  # the hardened loader: no aliases, bounded depth
        return None
    return doc if isinstance(doc, dict) else None


def _duration(x):
    """Seconds of a run, or None: a time is never negative (a damaged record's -1e308 would
    print as 309 digits)."""
    x = record.finite(x)
    return x if x is not None and x >= 0 else None


def _fraction(x):
    x = record.finite(x)
    return x if x is not None and 0 <= x <= 1 else None


def _network(config):
    try:
        m = config["model"]
        hidden, activation = m["hidden"], m["activation"]
    except (KeyError, TypeError):
        return None
    if RULES["model.hidden"](hidden) is not None or not isinstance(activation, str):
        return None  # a damaged config.yaml (sizes bp would refuse): no network to name
    return describe_network([784, *hidden, 10], one_line(activation, 20))


def describe(run_dir, latest=None):
    """One run as a dict: name, started, network, epochs done/planned, best validation
    accuracy, test accuracy, seconds, state, and whether it is ``latest``."""
    config = _config(os.path.join(run_dir, "config.yaml"))
    metrics = _metrics(os.path.join(run_dir, "metrics.jsonl"))
    result = record.read(run_dir)
    state = record.state(result)
    if rundir.in_use(run_dir):
        state = record.RUNNING
    elif state in (None, record.RUNNING):  # killed (kill -9, a machine that went down): nothing said how it ended
        state = record.INTERRUPTED
    try:
        planned = config["train"]["epochs"]
    except (KeyError, TypeError):
        planned = None
    vals = [v for v in (_fraction(m.get("val_accuracy")) for m in metrics) if v is not None]
    # every part of a run that was resumed; a record from before bp kept the total: its last part, or the epochs
    seconds = _duration((result or {}).get("total_seconds"))
    if seconds is None:
        seconds = _duration((result or {}).get("seconds")) if state == record.FINISHED else None
    times = [t for t in (_duration(m.get("seconds")) for m in metrics) if t is not None]
    if seconds is None and times:
        seconds = sum(times)
    started = record.text(result, "started")
    if started is None:  # a run from before the record kept it: its config's time
        try:
            started = datetime.fromtimestamp(os.stat(os.path.join(run_dir, "config.yaml")).st_mtime
                                             ).isoformat(timespec="seconds")
        except (OSError, OverflowError, ValueError):
            started = None
    return {
        "name": os.path.basename(os.path.normpath(run_dir)),
        "run_dir": run_dir,
        "started": started[:19] if started else None,
        "network": _network(config),
        "epochs_done": len(metrics),
        "epochs_planned": planned if type(planned) is int and not RULES["train.epochs"](planned) else None,
        "best_val_accuracy": max(vals) if vals else None,
        "test_accuracy": _fraction((result or {}).get("test_accuracy")),
        "seconds": _duration(seconds),
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
    if latest and os.path.isdir(latest) and rundir.holds_a_run(latest) and not any(r["latest"] for r in runs):
        runs.append(describe(latest, latest))
    runs.sort(key=lambda r: (r["started"] or "", r["name"]), reverse=True)
    return runs


def render(runs, root):
    if not runs:
        return f"no runs under {shown_path(root)} yet: start one with 'bp train'"
    header = ("", "run", "started", "network", "epochs", "best val", "test", "time", "state")
    rows = [header]
    for r in runs:
        epochs = f"{r['epochs_done']}/{r['epochs_planned'] if r['epochs_planned'] is not None else '?'}"
        time_ = _seconds(r["seconds"])
        rows.append(("*" if r["latest"] else "", one_line(r["name"], 60), one_line(r["started"] or "-").replace("T", " "),
                     one_line(r["network"] or "-"), epochs, percent(r["best_val_accuracy"]), percent(r["test_accuracy"]),
                     time_, one_line(r["state"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + ["", f"* = {shown_path(os.path.join(root, rundir.LATEST))}, the default model"])


def _seconds(seconds):
    """A run's time for the table: 12.3s; a number past any real run's (a damaged record) short."""
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 1e7 else f"{seconds:.3g}s"
