"""Worker processes that run parts of every step, over memory shared with the trainer.

Threads share one interpreter lock: the ~25 calls from Python of a shard
take turns with the other thread's, and two shards of network a
(784-128-64-10, batch 128) ran only ~1.2x as fast as one (two independent
threads training at once: 1.33x; two processes: 2.0x). ``WorkerProcesses``
forks worker processes instead. The engine sends each worker calls of jobs
it registered before the fork (a shard's feedforward and backprop, a part of
the update, a part of the next batch's augmentation) and runs its own part
meanwhile.

Everything a call reads or writes is shared memory (``shared_empty``),
allocated before the fork: the parameters and optimizer state, the batch
buffers, the buffers the gradients go to. Everything else a worker touches
(a shard's z and delta, the products prepared over them) is its own copy,
made by the fork, so the same objects at the same addresses work in every
process. A call's result never depends on the process that ran it: the
engine's bits are the same on processes, threads or the caller alone.

Each worker keeps to a CPU of its own (``_cpus_for``), not the first one
the trainer may use. A round: ``send`` calls (each is written into the worker's ring of slots,
then one semaphore post), the trainer's own work, ``finish`` (an END call
to each worker, then waiting for each one's post back). Waking a sleeping
process costs tens of microseconds on a VM, a tenth of network a's step,
so each side first polls its semaphore for up to ``SPIN_S``, then sleeps in
the kernel. A poll takes CPU from another process only for that long, and
when another process holds a core, ``ShardPlacement`` finds the caller
alone faster and the workers sleep.

A worker that raises reports its traceback, which ``finish`` raises (the
round's later calls to it are skipped); a worker that dies (killed, out of
memory) is noticed within ``CHECK_S`` and raised as ``WorkerDied``. A wait
that is interrupted closes the workers: its workers are mid-round, and a later
round could take their late posts for its own. A worker exits when told,
when its parent dies (Linux's parent-death signal, else a check of its
parent), or at the trainer's exit (``atexit``), and ignores Ctrl-C and
SIGTERM: the trainer handles them (saves the run, then stops its workers).
"""

import atexit
import contextlib
import ctypes
import mmap
import multiprocessing
import os
import signal
import sys
import time
import traceback

import numpy as np

SPIN_S = 0.001     # polling before sleeping, each wait
CHECK_S = 0.2       # how often a sleeping side checks that the other is alive
ERROR_BYTES = 2000  # a worker's error message, at most
END, STOP = -1, -2  # calls that end a round, and the worker
SIGNALS = {signal.SIGINT, signal.SIGTERM}


def available():
    """Whether worker processes can be forked here (Linux, and not from a daemonic
    process of multiprocessing's, which may have no children)."""
    return (sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon)


def shared_empty(shape, dtype=np.float32):
    """An uninitialised array in memory shared with processes forked later (a shared
    anonymous mapping, page-aligned; it lives as long as the array or its views)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    region = mmap.mmap(-1, max(1, count * dtype.itemsize))
    return np.frombuffer(region, dtype, count).reshape(shape)


def shared_zeros(shape, dtype=np.float32):
    return shared_empty(shape, dtype)  # a fresh anonymous mapping reads as zeros


class WorkerDied(RuntimeError):
    pass


class WorkerProcesses:
    """``workers`` worker processes that run calls of ``jobs`` the trainer sends them.

    ``jobs``: functions ``job(a, b, c)`` of three ints, forked with the workers:
    they must read and write only shared memory that the trainer looks at
    (anything else they touch is the worker's own copy). A round: ``send(i,
    job, a, b, c)`` any number of times (each worker runs its calls in the
    order sent, at most ``SLOTS - 1`` a round), the trainer's own work
    meanwhile, then ``finish()``, which waits for every worker's calls and
    raises a worker's error.
    """

    SLOTS = 16

    def __init__(self, workers, jobs):
        ctx = multiprocessing.get_context("fork")
        self.size, self.jobs = workers, list(jobs)
        self.calls = shared_zeros((workers, self.SLOTS, 4), np.int64)  # (job, a, b, c) ring per worker
        self.sent = [0] * workers                                     # calls sent, per worker
        self.failed = shared_zeros(workers, np.int64)                 # worker i raised this round
        self.messages = shared_zeros((workers, ERROR_BYTES), np.uint8)
        self.finished = shared_zeros(workers, np.float64)             # when its last call ended (perf_counter)
        self.go = [ctx.Semaphore(0) for _ in range(workers)]          # one post per call
        self.done = [ctx.Semaphore(0) for _ in range(workers)]        # one post per round
        self.parent = os.getpid()
        self.round = [0] * workers  # calls sent to each worker this round
        self.procs = []
        # closed before multiprocessing's own exit handler (registered earlier, so run later)
        # would terminate the workers and wait for them
        atexit.register(self.close)
        # the workers set their own signal dispositions: nothing reaches them before that
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        cpus = _cpus_for(workers)
        try:
            for i in range(workers):
                proc = ctx.Process(target=self._serve, args=(i, cpus[i]), daemon=True, name=f"bp-worker-{i + 1}")
                proc.start()
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    # -- the trainer's side ---------------------------------------------------
    def send(self, worker, job, a=0, b=0, c=0):
        """Worker ``worker`` runs ``jobs[job](a, b, c)`` after the calls sent before; returns at once."""
        if not self.procs:
            raise WorkerDied("the engine's worker processes were closed")
        if self.round[worker] >= self.SLOTS - 1:
            raise ValueError(f"more than {self.SLOTS - 1} calls to one worker in a round")
        if not 0 <= job < len(self.jobs):
            raise ValueError(f"no job {job} (there are {len(self.jobs)})")
        self._post(worker, job, a, b, c)

    def _post(self, worker, job, a, b, c):
        self.calls[worker, self.sent[worker] % self.SLOTS] = (job, a, b, c)
        self.sent[worker] += 1
        self.round[worker] += 1
        self.go[worker].release()  # (a semaphore post orders the write above before the worker's read)

    def finish(self):
        """Wait for every call of this round; raise the first error. Interrupted (Ctrl-C
        in a test, a worker that died), it closes the workers: a round half waited for cannot
        be told from the next."""
        busy = [i for i in range(self.size) if self.round[i]]
        try:
            for i in busy:
                self._post(i, END, 0, 0, 0)
                self.round[i] = 0
            for i in busy:
                while not _acquire(self.done[i], SPIN_S, CHECK_S):
                    proc = self.procs[i]
                    if not proc.is_alive():
                        raise WorkerDied(f"one of bp's worker processes died ({_how(proc.exitcode)})")
        except BaseException:
            self.close()
            raise
        for i in busy:
            if self.failed[i]:
                self.failed[i] = 0
                text = bytes(self.messages[i]).rstrip(b"\0").decode("utf-8", "replace")
                raise RuntimeError(f"in engine worker {i + 1}: {text}")

    def close(self):
        """Stop the workers (waiting briefly for each, then killing it)."""
        atexit.unregister(self.close)
        if not self.procs:
            return
        for i in range(self.size):
            self.calls[i, self.sent[i] % self.SLOTS] = (STOP, 0, 0, 0)
            self.go[i].release()
        for proc in self.procs:
            proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.procs = []

    # -- the worker's side ----------------------------------------------------
    def _serve(self, i, cpu):
        # Ctrl-C and a SIGTERM to the process group are the trainer's to handle (it saves
        # the run, then stops the workers); a worker is stopped by its trainer, or killed
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        _die_with_parent()
        if cpu is not None:
            with contextlib.suppress(OSError):  # (a CPU taken away meanwhile: run anywhere)
                os.sched_setaffinity(0, {cpu})
        taken, failed = 0, False
        while True:
            while not _acquire(self.go[i], SPIN_S, CHECK_S):
                if os.getppid() != self.parent:
                    os._exit(0)
            job, a, b, c = (int(x) for x in self.calls[i, taken % self.SLOTS])
            taken += 1
            if job == STOP:
                os._exit(0)
            if job == END:
                self.failed[i] = failed
                failed = False
                self.done[i].release()
                continue
            if failed:  # the round's later calls are skipped once one has raised
                continue
            try:
                self.jobs[job](a, b, c)
                self.finished[i] = time.perf_counter()  # (CLOCK_MONOTONIC: the trainer's clock too)
            except BaseException:  # handed to the trainer, which raises it
                text = traceback.format_exc().encode("utf-8", "replace")[-(ERROR_BYTES - 1):]
                self.messages[i, :] = 0
                self.messages[i, :len(text)] = np.frombuffer(text, np.uint8)
                failed = True


def _acquire(sem, spin_s, timeout_s):
    """Take ``sem``: poll it for up to ``spin_s``, then sleep on it for up to ``timeout_s``.
    False if it was not free by then."""
    if sem.acquire(False):
        return True
    end = time.perf_counter() + spin_s
    while time.perf_counter() < end:
        for _ in range(16):
            if sem.acquire(False):
                return True
    return sem.acquire(True, timeout_s)


def _how(exitcode):
    """How a process ended, from its exit code (-N: killed by signal N)."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


def _cpus_for(workers):
    """The CPU each worker keeps to: one of its own, none of them the first CPU this
    process may use (left to the trainer, which is not pinned: it moves off a worker's
    CPU when both are busy). Linux may wake a process on its waker's CPU: unpinned, two
    of four runs of network a on 2 cores ran at about one core's speed, one of them seen
    with trainer and worker on one CPU. None for each if there are too few CPUs."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return [None] * workers
    if len(allowed) < workers + 1:
        return [None] * workers
    return allowed[1:workers + 1]


def _die_with_parent():
    """Ask Linux to kill this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # the worker's own check of its parent remains
