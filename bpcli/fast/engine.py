"""The fast engine: the fused core's shards, run where ``ShardPlacement`` finds them fastest.

On more than one thread (``--threads N``), each mini-batch is split into
``shards_for(threads, ...)`` shards (one per thread, if each is worth one).
The caller runs the first; worker processes (``parallel.processes``, forked
over shared memory: no interpreter lock between them) run the others, and
share out the next batch's augmentation and a large update with it. Where
processes cannot be forked, worker threads do (``parallel.threads``); when
another process holds a core, the caller may run the shards alone, if that
is faster (``parallel.placement``). It is the same mini-batch SGD as on one
thread (not Hogwild): only float rounding differs, and the same seed and
thread count give the same weights, bit for bit, however and wherever the
shards ran (``core``).

Interface (``bpcli.reference`` lists it): ``train_batch(X, Y, lr)`` trains on
one mini-batch; ``params()``, ``state()`` and ``load()`` see parameters and
optimizer state in model order (true pixel order, the checkpoint's names);
``buffer()`` and ``register()`` let the caller put batches where the workers
read them and give them work.
"""

import time

import numpy as np

from ..errors import BpError
from .core import FusedCore
from .fused import PLAIN
from .parallel.placement import ShardPlacement, worker_modes
from .parallel.processes import WorkerDied, WorkerProcesses, shared_empty, shared_zeros
from .parallel.sharding import parts_for, shards_for
from .parallel.threads import WorkerThreads

# The caller's share of a row-wise job moves by SHARE_STEP a step: up while its workers end
# their calls after the caller ends its own work, down while they end before.
SHARE_STEP = 0.004

SHARD_JOB, UPDATE_JOB = 0, 1  # the engine's own registered jobs: a shard of a step, a part of the update
STAGED_PIXELS, STAGED_FLOATS = -1, -2  # where a worker process finds its rows, if not in a buffer


class Engine(FusedCore):
    """``FusedCore`` (see there for the arguments) on ``threads`` threads: its shards on
    worker processes, worker threads or the caller alone, whichever is fastest now."""

    def __init__(self, spec, Ws, bs, make_opt, batch, inked, threads=1, dropout=0.0, max_norm=0.0, rng=None):
        shards = shards_for(threads, batch, spec.sizes)
        modes = worker_modes() if shards > 1 else ["serial"]
        # what worker processes read or write is in memory shared with them (shared_empty, shared_zeros)
        forking = "processes" in modes
        empty = shared_empty if forking else np.empty
        super().__init__(spec, Ws, bs, make_opt, batch, inked, shards, parts_for(shards, spec.n_params),
                         dropout, max_norm, rng, empty=empty, zeros=shared_zeros if forking else np.zeros)
        self.worker_threads = None  # started at their first step
        self.worker_processes = None  # forked at the first step in that mode
        if forking:
            # the worker processes' inputs: the pixels, targets and dropout masks of their rows
            self.staged_pixels = empty((batch, self.layout.k), np.uint8)
            self.staged_targets = empty((batch, spec.sizes[-1]), np.float32)
            self.staged_masks = [empty((batch, w), np.float32) for w in self.hidden] if dropout else []
        self.jobs = [self._shard_job, self._update_job]  # what workers may run: SHARD_JOB, UPDATE_JOB, register()
        self.lr = empty(1, np.float64)  # the step's learning rate, for the workers' parts of the update
        self.caller_share = 1 / shards  # of a row-wise job's rows (split)
        self.notices = []  # lines for the user (a worker process lost), taken by the caller
        self.placement = ShardPlacement(modes)

    def buffer(self, shape, dtype=np.float32):
        """An uninitialised array that the engine's workers can write too (where they are
        processes, in memory shared with them): for what a registered job writes, and for
        batches (worker processes read their rows of a batch in such a buffer where it is,
        rather than from a copy)."""
        if self.worker_processes is not None:
            raise RuntimeError("buffers are made before the first step (the worker processes start then)")
        return super().buffer(shape, dtype)

    def _source(self, X):
        """Which ``buffer`` X's rows are the first rows of, else None."""
        for i, array in enumerate(self.buffers):
            if (X.dtype == array.dtype and X.strides == array.strides and X.shape[1:] == array.shape[1:]
                    and X.ctypes.data == array.ctypes.data and len(X) <= len(array)):
                return i
        return None

    def register(self, job):
        """Make ``job(a, b, c)`` (three ints) something the engine's workers may run: a part
        of what ``train_batch``'s ``meanwhile`` returns, as ``(handle, a, b, c)``. Worker
        processes run their own copy of ``job``, forked at the first step, so register every
        job before it, and let it write only memory shared with them (``buffer``)."""
        if self.worker_processes is not None:
            raise RuntimeError("jobs are registered before the first step (the worker processes start then)")
        return super().register(job)

    def train_batch(self, X, Y, lr, meanwhile=None):
        """One step of mini-batch SGD on X (n, k) and targets Y (n, 10), n <= batch.

        X: uint8 pixels in ``inputs_of`` order, or float32 in [0, 1]. Returns a[L]
        (n, 10) before the update, valid until the next call. ``meanwhile``: a
        function to run while the workers compute (on one thread: after them),
        such as preparing the next batch; it must not touch X, Y or the engine.
        It may return a list of parts ``(handle, a, b, c)`` of registered jobs
        (``register``), or None for nothing, which the workers share out with the
        shards: on worker processes the first runs here, the others on the workers.
        """
        Y, masks, coeffs, tasks = self._tasks(X, Y, lr)
        mode = self.placement.choose()
        if mode == "processes" and not self._start_processes():
            mode = self.placement.current()
        start = time.perf_counter()
        if mode == "processes":
            self._run_on_processes(tasks, X, Y, masks, meanwhile)
            if not self.worker_processes.procs:  # a worker was lost, and the round made good
                mode = "serial"
        elif mode == "threads":
            self.worker_threads = self.worker_threads or WorkerThreads(self.shard_count - 1)
            self.worker_threads.run(
                tasks, meanwhile and (lambda: [lambda p=p: self.run_part(p) for p in meanwhile() or ()]))
        else:
            self._run_here(tasks, meanwhile)
        self._finish(coeffs, lr, sum(t is not None for t in tasks), self._parts_runner(mode))
        self.placement.record(mode, time.perf_counter() - start)
        return self.outputs[:len(X)]

    def _start_processes(self):
        """Fork the worker processes (once); False, and processes left out from now on, if
        that fails or they were stopped (a worker died, a wait was interrupted)."""
        if self.worker_processes is None:
            try:
                self.worker_processes = WorkerProcesses(self.shard_count - 1, self.jobs)
            except Exception:  # e.g. a process limit (OSError): threads or the caller alone will do
                self.worker_processes = False
        if not self.worker_processes or not self.worker_processes.procs:
            self.placement.drop("processes")
            return False
        return True

    def _run_on_processes(self, tasks, X, Y, masks, meanwhile):
        """The first shard here, the others on the worker processes, and the parts that
        ``meanwhile`` returns shared out: the first here, the others on the workers."""
        workers = self.worker_processes
        n, rows = len(X), slice(self.bounds[1], len(X))  # the workers' rows
        source = self._source(X)
        if rows.start < rows.stop:
            if source is None and X.dtype == np.uint8:
                source = STAGED_PIXELS
                np.copyto(self.staged_pixels[rows], X[rows])
            elif source is None:  # straight into the shards' float inputs (which then skip their copy)
                source = STAGED_FLOATS
                np.copyto(self.inputs[rows], X[rows])
            np.copyto(self.staged_targets[rows], Y[rows])
            for staged, mask in zip(self.staged_masks, masks or ()):
                np.copyto(staged[rows], mask[rows])
        sent = []  # every call sent to a worker this round
        for t in range(1, self.shard_count):
            if self.bounds[t] < n:
                sent.append((SHARD_JOB, t, n, source))
                workers.send(t - 1, *sent[-1])
        try:
            parts = (meanwhile() if meanwhile is not None else None) or ()
            for i, part in enumerate(parts[1:]):
                if part is not None:
                    sent.append(part)
                    workers.send(i % workers.size, *part)
            if parts:
                self.run_part(parts[0])
            tasks[0]()
        except BaseException:
            workers.finish()
            raise
        done_here = time.perf_counter()
        try:
            workers.finish()
        except WorkerDied as died:
            # A shard or a part of a registered job writes the same values wherever it runs
            # (its gradient buffer, its rows), so this round's calls are run again here, and
            # training goes on without worker processes (they are closed).
            for call in sent:
                self.run_part(call)
            self.notices.append(f"warning: {died}; training goes on without worker processes")
            return
        if len(parts) > 1:  # balance the parts of the next batch (see split): who waited for whom?
            waited = workers.finished.max() > done_here
            self.caller_share = min(1.0, max(0.0, self.caller_share + (SHARE_STEP if waited else -SHARE_STEP)))

    def split(self, n):
        """Rows [lo, hi) of a batch of n rows for each part of a job whose rows are independent
        (augmentation's warps), to hand back from ``train_batch``'s ``meanwhile``: the first
        part for the caller, one for each worker. Such parts may be cut anywhere without
        changing a bit, so on worker processes the caller's share follows the load: the caller
        also prepares the batches, and its share moves by ``SHARE_STEP`` a step, down while
        the workers end their calls before it ends its own, up while they end after."""
        k = self.shard_count
        if k == 1:
            return [(0, n)]
        first = round(n * self.caller_share)
        cuts = [0] + [first + i * (n - first) // (k - 1) for i in range(k)]
        return list(zip(cuts, cuts[1:]))  # (some may be empty: lo == hi)

    def _shard_job(self, t, n, source):
        """What a worker process runs for shard t (>= 1) of a batch of n rows, its inputs in
        ``buffers[source]``, else staged (``STAGED_PIXELS``, ``STAGED_FLOATS``)."""
        shard, lo, hi = self.shards[t], self.bounds[t], min(self.bounds[t + 1], n)
        if source >= 0:
            X = self.buffers[source][lo:hi]
        else:
            X = self.staged_pixels[lo:hi] if source == STAGED_PIXELS else shard.inputs[:hi - lo]
        masks = [m[lo:hi] for m in self.staged_masks] if self.dropout else None
        shard.forward(X, masks)
        shard.backward(self.staged_targets[lo:hi], n, PLAIN)

    def _update_job(self, i, shards, _):
        """What a worker process runs for part i of the update (``Update.finish_part``)."""
        self.update.finish_part(i, float(self.lr[0]), shards)

    def _parts_runner(self, mode):
        """How the update's parts run in ``mode``: shared out among its workers, or (None)
        one after the other on the caller."""
        if len(self.update.parts) == 1 or mode == "serial":
            return None
        if mode == "threads":
            return lambda lr, shards: self.worker_threads.run(
                [lambda i=i: self.update.finish_part(i, lr, shards) for i in range(len(self.update.parts))])
        return self._update_on_processes

    def _update_on_processes(self, lr, shards):
        """Part i of the update on the caller if i % (workers + 1) == 0, else on a worker."""
        workers, update = self.worker_processes, self.update
        size = workers.size + 1
        self.lr[0] = lr
        for i in range(len(update.parts)):
            if i % size:
                workers.send(i % size - 1, UPDATE_JOB, i, shards)
        try:
            for i in range(0, len(update.parts), size):
                update.finish_part(i, lr, shards)
        finally:
            try:
                workers.finish()
            except WorkerDied as died:  # its part of the update may be half done: no way back
                raise BpError(f"{died} while it updated the weights, which are now unusable; "
                              "resume the run (--resume: from its last checkpoint), with --threads 1 "
                              "if this repeats") from None

    @property
    def steps_by_workers(self):
        """Steps run in each mode (since this engine started)."""
        return self.placement.counts

    def close(self):
        if self.worker_threads is not None:
            self.worker_threads.close()
            self.worker_threads = None
        if self.worker_processes:
            self.worker_processes.close()
        self.worker_processes = None
