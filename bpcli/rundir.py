"""Run directories: where a training run lives, who holds it, and ``runs/latest``.

A run dir holds ``config.yaml``, ``metrics.jsonl``, ``last.npz``, ``best.npz``
and ``result.json`` (the run record: how the run ended, ``record.py``). Several ``bp train`` may start at
once on one machine (a CI matrix), so:

- a new run dir is created exclusively (``os.mkdir`` fails if it exists):
  two runs never get the same default name, even within one second;
- a run dir is held by an exclusive ``flock`` on its ``.lock`` file for the
  whole run, resumes included; a second trainer on it is refused, naming the
  process that holds it. The kernel drops the lock when that process ends,
  however it ends, so a killed run never leaves a stale lock;
- ``--force`` replaces only bp's own files in the run dir, only while holding
  its lock, and never through a symbolic link (``--run-dir runs/latest``);
- ``latest`` lives in the runs root (``$BP_RUNS_DIR``, else ``./runs``),
  whatever ``--run-dir`` says, and points at the newest run that has a model:
  it moves when a run writes its first ``best.npz``, so a run that is
  interrupted or diverges before that leaves the previous good model the
  default of ``bp evaluate`` and ``bp predict``.
"""

import contextlib
import errno
import os
import socket
import stat
import time
from datetime import datetime

from . import record
from .errors import BpError, ConfigError
from .fsutil import describe_mode, shell_word, shown_path

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.npz", "best.npz", record.NAME)
LOCK_NAME = ".lock"
LATEST = "latest"


class RunInUse(BpError):
    """Another process is training in this run dir (exit 1: try again later)."""


def runs_root():
    return os.environ.get("BP_RUNS_DIR") or "runs"


def latest_link():
    return os.path.join(runs_root(), LATEST)


# what only bp writes in a run dir: a folder holding none of these is not a bp run
MARKERS = (LOCK_NAME, "last.npz", "best.npz")


def holds_a_run(run_dir):
    return any(os.path.lexists(os.path.join(run_dir, name)) for name in RUN_FILES)


def is_a_run(run_dir):
    """Whether bp wrote this folder (not merely a folder with a config.yaml of another program's)."""
    return any(os.path.lexists(os.path.join(run_dir, name)) for name in MARKERS)


def check(run_dir, force=False):
    """Refuse (exit 2) a --run-dir that is a file, a link we would delete through, a
    folder of another program's files, or that holds a run unless ``force``; and a run
    dir another process is training in (RunInUse, exit 1: nothing else would help).
    Cheap, no side effects: bp train calls it before loading any data."""
    if run_dir is None:
        return
    shown = shown_path(run_dir)
    # realpath, not islink: 'runs/latest/' (trailing slash) is the link too
    if force and os.path.realpath(run_dir) != os.path.abspath(run_dir):
        raise ConfigError(f"--run-dir {shown} goes through a symbolic link (to "
                          f"{shown_path(os.path.realpath(run_dir))}); --force never deletes through a link: "
                          "name the run dir itself")
    if os.path.lexists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"--run-dir {shown} is a file; name a folder")
    held_here = os.path.realpath(run_dir) in _held  # (a second flock of our own would look like another's)
    if os.path.isdir(run_dir) and not held_here and in_use(run_dir):  # neither --resume nor --force could take it
        raise _in_use(run_dir, holder(run_dir))
    if os.path.isdir(run_dir) and holds_a_run(run_dir):
        if not is_a_run(run_dir):
            raise ConfigError(f"--run-dir {shown} holds files named like a run's ({', '.join(RUN_FILES)}) "
                              "that bp did not write there; choose another --run-dir")
        if not force:
            raise ConfigError(f"run dir {shown} already holds a run; continue it with --resume {shell_word(run_dir)}, "
                              "choose another --run-dir, or pass --force to overwrite")


def create(run_dir=None, force=False):
    """Create and lock a new run dir; return its path.

    Default: ``<runs root>/<YYYYmmdd-HHMMSS>``, with ``-2``, ``-3``… when that
    name is taken; the name is claimed by ``mkdir`` itself, so parallel runs
    cannot pick the same one. With ``force`` an existing run's files are
    removed, but only once its lock is held (never a run still training).
    """
    check(run_dir, force)
    if run_dir is None:
        root = runs_root()
        _makedirs(root)
        candidate = claim(os.path.join(root, datetime.now().strftime("%Y%m%d-%H%M%S")))
        lock(candidate)
        return candidate
    _makedirs(run_dir)
    lock(run_dir)
    check(run_dir, force)  # again, now that nobody else can be writing it
    if force:
        for name in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(run_dir, name))  # a link inside is removed, not followed
    return run_dir


def claim(path, tries=10_000):
    """Create a new, empty folder at ``path``, or ``path-2``, ``path-3``… when that is taken;
    the name is claimed by ``mkdir`` itself, so parallel runs cannot pick the same one."""
    for n in range(1, tries):
        candidate = path if n == 1 else f"{path}-{n}"
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            continue
        except OSError as err:
            raise _cannot_create(candidate, err) from None
    raise BpError(f"cannot find a free run dir name beside {path}; pass --run-dir")


def _makedirs(folder):
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise _cannot_create(folder, err) from None


def _cannot_create(folder, err):
    return BpError(f"cannot create run dir {shown_path(folder)}: {err.strerror or err}; "
                   "choose another --run-dir or set BP_RUNS_DIR")


# ---------------------------------------------------------------------------
# The lock: one trainer per run dir

_held = {}  # real path of a run dir -> the open lock file (this process holds it)


LOCK_PATIENCE = 0.5  # seconds: a lock held for a moment (bp runs looking) is not a trainer


def _open_lock(run_dir, create):
    """The run dir's lock file, opened without following a link or blocking on a FIFO, and
    refused unless it is a regular file: a run dir restored from elsewhere may hold anything."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (os.O_CREAT if create else 0)
    path = os.path.join(run_dir, LOCK_NAME)
    fd = os.open(path, flags, 0o666)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BpError(f"{shown_path(path)} is {describe_mode(st.st_mode)}, not bp's lock file; "
                      "remove it, or choose another run dir")
    return fd


def lock(run_dir):
    """Hold ``run_dir``'s lock for the rest of this process (or until ``release``).
    Raises RunInUse naming the process that holds it. Holding it twice is fine."""
    key = os.path.realpath(run_dir)
    if key in _held:
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; parallel runs there are the user's care
        return
    try:
        fd = _open_lock(run_dir, create=True)
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW met a link
            raise BpError(f"{shown_path(os.path.join(run_dir, LOCK_NAME))} is a symbolic link, not bp's lock "
                          "file; remove it, or choose another run dir") from None
        raise _cannot_create(run_dir, err) from None
    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) and time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            who = _read_holder(fd)
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _in_use(run_dir, who) from None
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return  # a file system without locks: run unprotected rather than not at all
            raise _cannot_create(run_dir, err) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    _held[key] = fd


def _in_use(run_dir, who):
    return RunInUse(f"run dir {shown_path(run_dir)} is in use by another bp train ({who}); wait for "
                    "it to finish or stop it, or choose another --run-dir")


def holder(run_dir):
    """What the lock file of a run dir says about the process holding it."""
    try:
        fd = _open_lock(run_dir, create=False)
    except (OSError, BpError):
        return "a process that has not written its pid yet"
    try:
        return _read_holder(fd)
    finally:
        os.close(fd)


def _read_holder(fd):
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not written its pid yet"


def in_use(run_dir):
    """Whether some process holds ``run_dir`` (a run still training), without taking it:
    a shared lock cannot be had while another process holds the exclusive one."""
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = _open_lock(run_dir, create=False)
    except (OSError, BpError):
        return False  # no lock file (never trained, or not a run dir), or not one of bp's
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as err:
        return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)


def release(run_dir):
    """Let go of a run dir this process holds (tests train many runs in one process)."""
    fd = _held.pop(os.path.realpath(run_dir), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def held(run_dir):
    """Hold ``run_dir`` (created if missing) for the duration of the block, unless it was
    already held before it (then it stays held)."""
    already = os.path.realpath(run_dir) in _held
    _makedirs(run_dir)
    lock(run_dir)
    try:
        yield
    finally:
        if not already:
            release(run_dir)


# ---------------------------------------------------------------------------
# latest, and --resume's argument

def point_latest(run_dir):
    """Make ``<runs root>/latest`` point at ``run_dir``: the user's newest model."""
    point(os.path.join(runs_root(), LATEST), run_dir)


def point(link, run_dir):
    """Make ``link`` a symlink to ``run_dir``, replaced atomically.

    The link is relative when the run is under the link's folder (the folder can
    then be moved whole), absolute otherwise. A real file or folder at ``link``
    is left alone: it is not bp's.
    """
    root = os.path.dirname(link) or "."
    if os.path.lexists(link) and not os.path.islink(link):
        return
    target = os.path.realpath(run_dir)
    if target == os.path.abspath(link):
        return  # never a link to itself
    rel = os.path.relpath(target, os.path.abspath(root))
    tmp = f"{link}.{os.getpid()}.tmp"
    try:
        os.makedirs(root, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(target if rel.startswith("..") else rel, tmp)
        os.replace(tmp, link)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a file system without symlinks: the link is a convenience


def locate_model(path=None):
    """One rule for "a model" everywhere (evaluate, predict, explain, plot, export, serve):
    -> ``(checkpoint path, run dir)``.

    A run dir means its ``best.npz``; a checkpoint file means itself, in its run
    (the folder holding it); nothing means ``<runs root>/latest``. Raises
    CheckpointError saying what is missing and what to do.
    """
    from .errors import CheckpointError
    from .fsutil import shown_path

    if path is None:
        link = latest_link()
        if not os.path.isdir(link):
            raise CheckpointError(f"no model yet: {link} does not exist; train one with 'bp train' "
                                  "or pass a run dir or checkpoint")
        path = link
    if os.path.isdir(path):
        ckpt = os.path.join(path, "best.npz")
        if not os.path.exists(ckpt):
            hint = (f"it holds a last.npz: pass {os.path.join(shown_path(path), 'last.npz')}, or resume it"
                    if os.path.exists(os.path.join(path, "last.npz")) else "it has not finished an epoch")
            raise CheckpointError(f"run dir {shown_path(path)} has no best.npz yet; {hint}")
        return ckpt, path
    return path, os.path.dirname(path) or "."


def locate_resume(path):
    """--resume accepts a run dir or a checkpoint inside one, meaning that run: -> (run_dir,
    its last.npz), the one file that holds a run's training state (best.npz holds weights only)."""
    from .errors import CheckpointError

    shown = shown_path(path)
    if os.path.isdir(path):
        if not is_a_run(path):
            raise CheckpointError(f"{shown} is not a bp run dir (no last.npz): nothing to resume; "
                                  "pass a run dir written by bp train")
        run_dir = os.path.realpath(path)  # (runs/latest means the run it points at)
    elif os.path.lexists(path):
        mode = os.stat(path).st_mode if os.path.exists(path) else None
        if mode is None or not stat.S_ISREG(mode):
            what = describe_mode(mode) if mode is not None else "a broken or looping link"
            raise CheckpointError(f"--resume {shown} is {what}; pass a run dir or a checkpoint in one")
        run_dir = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    else:
        raise CheckpointError(f"--resume {shown} not found; pass a run dir written by bp train")
    return run_dir, os.path.join(run_dir, "last.npz")
