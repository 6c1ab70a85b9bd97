"""Several workers on this machine: spawned processes, each tied to its parent's life."""

import contextlib
import os
import signal
import time

from ..cpus import set_blas_threads
from ..errors import BpError, ConfigError
from ..fsutil import one_line
from .study import redact
from .trials import note, work


WATCH_PARENT_SECONDS = 1.0
STOP_GRACE_SECONDS = 30  # a stopping worker saves its trial; one that takes longer than this is killed


def _worker_process(job, worker, results, parent):
    """A spawned worker: BLAS threads pinned before numpy is imported, tied to its parent's
    life, signals turned into a clean stop, the outcome sent back as (kind, exit code, message)."""
    if job.threads:
        set_blas_threads(job.threads)
    from ..train import STOP_SIGNALS

    def stop(signum, frame):  # until work() notes them for its safe points: no trial to save yet
        raise KeyboardInterrupt

    for s in STOP_SIGNALS:
        signal.signal(s, stop)
    _die_with_parent(parent)
    try:
        outcome = ("done", 0, work(job, worker))
    except KeyboardInterrupt:
        outcome = ("interrupted", 130, "")
    except BpError as err:
        outcome = ("interrupted", 130, "") if err.exit_code == 130 else ("error", err.exit_code, str(err))
    except Exception as err:  # a bug or a failure bp does not know: one line, not a traceback per worker
        outcome = ("error", 1, f"worker {worker} failed: {type(err).__name__}: "
                               f"{one_line(redact(str(err), job.url), 300)}")
    for s in STOP_SIGNALS:  # a Python no-op, not SIG_IGN: a pending signal would be an OSError
        signal.signal(s, lambda signum, frame: None)
    if os.getppid() == parent:  # nobody reads a dead parent's queue: its feeder would fail aloud
        results.put(outcome)


def _die_with_parent(parent):
    """Stop this worker (SIGTERM: a clean stop, its trial saved as interrupted) when the
    parent dies, even by kill -9: no worker goes on training as an orphan. Linux says so at
    once (PR_SET_PDEATHSIG); a thread watching the parent's pid covers the rest, and a
    parent that died before either was set up."""
    import threading

    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch():
        while os.getppid() == parent:
            time.sleep(WATCH_PARENT_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="bp-watch-parent", daemon=True).start()


def run_workers(job, k):
    """K spawned workers on this machine; returns when all have ended. A worker killed from
    outside is reported and the others go on (its trial comes back through the heartbeat)."""
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker_process, args=(job, i, results, os.getpid()), name=f"bp-tune-{i}")
             for i in range(k)]
    outcomes = []
    try:
        for p in procs:
            p.start()
        pending = {p.sentinel: p for p in procs}
        while pending:
            for sentinel in wait(list(pending)):
                p = pending.pop(sentinel)
                p.join()
                if p.exitcode and p.exitcode < 0:
                    note(job, f"worker {procs.index(p)} (pid {p.pid}) was killed by signal {-p.exitcode}; "
                               "its trial is retried once its heartbeat is stale")
    except KeyboardInterrupt:
        _stop_workers(procs)
        raise
    finally:
        while len(outcomes) < k:
            try:
                outcomes.append(results.get(timeout=0.1))
            except Exception:  # queue.Empty: a worker that was killed sends nothing
                break
    errors = [o for o in outcomes if o[0] == "error"]
    if errors:
        raise (ConfigError if errors[0][1] == 2 else BpError)(errors[0][2])
    if any(o[0] == "interrupted" for o in outcomes):
        raise KeyboardInterrupt


def _stop_workers(procs):
    """SIGTERM to each live worker (each saves its trial as interrupted), then wait, bounded:
    one that has not stopped by then is killed (its trial is failed by the heartbeat)."""
    for p in procs:
        if p.pid is not None and p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in procs:
        if p.pid is None:
            continue
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
