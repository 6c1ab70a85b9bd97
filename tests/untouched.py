"""What the test suite must leave as it found it: the checkout's ``runs/`` and ``data/``.

``snapshot`` records every entry under a folder (kind, bytes' SHA-256, a link's
target) without following links; ``changes`` lists what differs between two.
"""

import hashlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USERS_FOLDERS = (REPO / "runs", REPO / "data")


def _entry(path):
    if path.is_symlink():
        return ("link", os.readlink(path))
    if path.is_dir():
        return ("folder",)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return ("file", digest.hexdigest())
    return ("other",)


def snapshot(folder):
    """``{relative path: entry}`` of everything under ``folder`` ({} when it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return {".": _entry(folder)} if os.path.lexists(folder) else {}
    found = {".": ("folder",)}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            found[str(path.relative_to(folder))] = _entry(path)
    return found


def changes(before, after):
    """What was added, removed or changed between two snapshots, one line each."""
    lines = [f"{name} added" for name in sorted(after.keys() - before.keys())]
    lines += [f"{name} removed" for name in sorted(before.keys() - after.keys())]
    lines += [f"{name} changed ({before[name][0]} -> {after[name][0]})"
              for name in sorted(before.keys() & after.keys()) if before[name] != after[name]]
    return lines
