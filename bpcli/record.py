"""The run record, ``result.json``: how a run ended, or that it is under way.

One JSON map in the run dir, replaced whole (atomically) at every change of
state. Written by ``bp train`` (and by ``bp tune`` for a trial its pruner
stopped), read by ``bp runs``, ``bp export`` and ``--resume``; this module is
the only one that knows its file name, its states and its fields:

    state           one of STATES
    started         when the run first started (ISO time; kept over resumes)
    total_seconds   wall time spent training it, summed over every resume
    epochs_done, epochs_planned, init, error, and when finished the summary
    ``bp train --json`` prints (test_accuracy, seconds of the last part, ...)

A run dir comes from anywhere (copied, restored, hand-edited): the file is read
size-bounded, and anything that is not a JSON map, or a field of the wrong
type, reads as missing.
"""

import math
import os

NAME = "result.json"
RUNNING, FINISHED, INTERRUPTED, DIVERGED, FAILED, PRUNED = (
    "running", "finished", "interrupted", "diverged", "failed", "pruned")
#: every state bp writes, and what each means
STATES = {
    RUNNING: "under way (or killed: bp runs tells them apart by the run dir's lock)",
    FINISHED: "trained all its epochs, or stopped early by train.patience",
    INTERRUPTED: "stopped by Ctrl-C or a signal; --resume continues it",
    DIVERGED: "stopped when its loss or weights stopped being finite",
    FAILED: "stopped by an error (a full disk, a bug)",
    PRUNED: "a bp tune trial stopped by the pruner",
}
MAX_BYTES = 1 << 20


def write(run_dir, state, /, **fields):
    """Replace the run's record with ``{"state": state, **fields}``."""
    from . import jsonio
    from .fsutil import write_text_atomic

    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}")
    write_text_atomic(os.path.join(run_dir, NAME), jsonio.dumps({"state": state, **fields}, indent=2) + "\n")


def read(run_dir):
    """The record as a dict, or None when it is missing or damaged."""
    import json

    from .fsutil import read_text

    text = read_text(os.path.join(run_dir, NAME), MAX_BYTES)
    try:
        doc = json.loads(text) if text else None
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def state(doc):
    """The record's state, or None when it is not one bp writes."""
    value = (doc or {}).get("state")
    return value if isinstance(value, str) and value in STATES else None


def number(doc, key):
    """A finite number field of the record, or None (missing, damaged, NaN, a bool)."""
    return finite((doc or {}).get(key))


def finite(value):
    """``value`` if it is a finite number (a run's files say anything), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:  # an integer of 400 digits
        return None


def text(doc, key):
    value = (doc or {}).get(key)
    return value if isinstance(value, str) else None
