"""The training engine: everything bp does for speed, behind one door.

``bpcli.network`` and ``bpcli.optim`` are the reference: they read like the
equations. ``Engine`` trains the same network the same way, and the tests
hold it to that reference for every activation, output, cost, optimizer and
thread count. Behind its small interface live:

* the layout (``layout``): W0's rows inked pixels first, one flat vector;
* the step (``step``): preallocated memory, in-place activations, every
  matrix product prepared once, pixels entering as uint8;
* the update (``fused``): SGD written into the gradient's own product;
* the BLAS calls (``blas``), bounds-checked: NumPy's own OpenBLAS, else SciPy's public wrappers;
* the workers: on more than one thread (``--threads N``), each mini-batch is
  split into ``shards_for(threads, ...)`` shards (one per thread, if each is
  worth one). The caller runs the first; worker processes (``crew``, forked
  over shared memory: no interpreter lock between them) run the others,
  and share out the next batch's augmentation and a large update with it.
  Where processes cannot be forked, worker threads do (``threads``). Every
  shard's gradient goes to memory of its own and they are added up in
  shard order, so the same seed and thread count give the same weights,
  bit for bit, however and wherever the shards ran. It is the same
  mini-batch SGD as on one thread (not Hogwild): only float rounding
  differs. When another process holds a core, the caller may run the
  shards alone, if that is faster (``Pace``).

Interface: ``train_batch(X, Y, lr)`` trains on one mini-batch; ``params()``,
``state()`` and ``load()`` see parameters and optimizer state in model order
(true pixel order, the checkpoint's names); ``buffer()`` and ``register()``
let the caller put batches where the workers read them and give them work.
"""

import os
import time

import numpy as np

from ..errors import BpError
from ..network import dropout_mask
from ..optim import clip_max_norm
from . import blas, crew
from .fused import PLAIN, Update
from .layout import Layout, param_views
from .step import Shard
from .threads import Team, single_threaded_blas  # noqa: F401 (train enters it)

__all__ = ["Engine", "blas", "shards_for", "single_threaded_blas"]


def dropout_masks(rng, shape_rows, widths, rate, dtype=np.float32):
    """Inverted-dropout masks for a batch, layer by layer, in the reference's draw order
    (drawn here, on the calling thread, so that the stream never depends on the threads)."""
    return [dropout_mask(rng, (shape_rows, w), rate, dtype) for w in widths]


class Pace:
    """How the shards of a step run: on worker processes ("processes", ``crew``), on
    worker threads ("threads", ``threads``), or one after the other on the caller
    ("serial").

    Every mode gives the same bits (a shard's result never depends on where it
    ran), so the choice is speed alone, and it changes with the machine's load:
    when another process holds a core, a worker that shares it stalls every
    step, and the caller alone (or threads, which take work as they come free)
    may be faster. The engine times its steps in the mode it runs and tries
    each other mode for ``TRIAL`` steps: every one of them right at the start,
    then again ``EVERY`` steps later, or twice as long as last time (up to
    ``LONGEST``) while it keeps losing; it keeps the fastest. A trial is judged
    on its own steps but the first (which may wake sleeping workers), and so
    is the first mode (after its first step: right after the fork, copy-on-write
    page faults slow both processes for a few steps, which a trial then forgets).
    A step of a trial's first ``TRIAL`` that takes more than ``GIVE_UP`` times the
    current mode's steps ends the trial at once, as lost: under load, a worker
    sharing a busy core can take milliseconds a step, and a whole trial of such
    steps costs more than the trial can win.

    A mode's time is the mean of its steps since it was last tried, and over
    the last ~``WINDOW`` of them once there are more: with a worker on a busy
    core, network a's steps took ~0.48 ms but ~4.4 ms one step in five or so,
    and a few steps can miss the slow ones. So a trial that is ahead after its
    ``TRIAL`` steps goes on until its mean covers ``WINDOW`` steps, and wins
    only if it is still ahead then (its mean decides: one slow step there, as
    a VM gives now and then, does not end it); the mode it replaced is tried again
    ``WINDOW`` steps later (a window can be lucky too); and a trial lost to a
    mean of fewer steps than a window (at the start, the first mode's) is tried
    again ``WINDOW`` steps later rather than after the doubled wait, unless it
    lost hopelessly. (With a quick win and a check afterwards instead, worker
    processes that won on a few lucky steps kept ~400 of network a's steps
    with one core busy.)
    """

    EVERY, LONGEST, TRIAL, GIVE_UP, WINDOW = 200, 3200, 8, 2.0, 32

    def __init__(self, modes=("threads", "serial")):
        self.modes = list(modes)
        self.mode = self.modes[0]
        self.seconds = dict.fromkeys(self.modes)  # recent step time of each mode
        self.timed = dict.fromkeys(self.modes, 0)  # the steps that ``seconds`` averages
        self.steps = 0
        self.trying = None  # the mode on trial, if any
        self.fresh = False  # the trial has not run its first (untimed) step yet
        # each mode's next trial: every one right at the start; WINDOW steps after a trial
        # replaced it; after a loss, twice as long as last time (from EVERY, up to LONGEST)
        self.due = {m: i * self.TRIAL for i, m in enumerate(self.modes)}
        self.every = dict.fromkeys(self.modes, self.EVERY)
        self.counts = dict.fromkeys(self.modes, 0)  # steps run in each mode

    def choose(self):
        self.steps += 1
        if self.trying is None:
            for mode in self.modes:
                if mode != self.mode and self.steps >= self.due[mode]:
                    self.trying, self.fresh = mode, True
                    self.seconds[mode], self.timed[mode] = None, 0  # judged on this trial alone
                    break
        return self.current()

    def current(self):
        return self.trying or self.mode

    def drop(self, mode):
        """Never use ``mode`` again (it failed to start)."""
        self.modes.remove(mode)
        for table in (self.seconds, self.timed, self.due, self.every):
            table.pop(mode)
        if self.mode == mode:
            self.mode = self.modes[0]
        if self.trying == mode:
            self.trying = None

    def record(self, mode, seconds):
        self.counts[mode] += 1
        if self.counts[mode] == 1 or (mode == self.trying and self.fresh):  # a mode's first, a trial's first
            self.fresh = False
            return
        self.timed[mode] += 1
        old = self.seconds[mode]
        weight = max(1 / self.timed[mode], 1 / self.WINDOW)  # the mean, then a moving mean
        self.seconds[mode] = seconds if old is None else old + weight * (seconds - old)
        if mode == self.trying:
            self._judge(mode, seconds)

    def _judge(self, tried, seconds):
        """After a timed step of the trial of ``tried``: end it, won or lost, or go on."""
        current, mean = self.seconds[self.mode], self.seconds[tried]
        in_trial = self.timed[tried] < self.TRIAL  # (after it, going on to a window: the mean decides)
        if in_trial and current is not None and seconds > self.GIVE_UP * current:
            self._lost(tried, hopeless=True)
        elif self.timed[tried] < self.TRIAL - 1:
            return
        elif current is not None and mean >= current:
            self._lost(tried)
        elif current is None or self.timed[tried] >= self.WINDOW:
            replaced, self.mode, self.trying = self.mode, tried, None
            # tried again soon: the winner's window may have been a lucky one
            self.every[replaced] = self.EVERY
            self.due[replaced] = self.steps + self.WINDOW
        # else ahead so far: it goes on until its mean covers a window

    def _lost(self, tried, hopeless=False):
        self.trying = None
        if self.timed[self.mode] < self.WINDOW and not hopeless:
            # lost to a mean of a few steps, which may have missed that mode's slow ones
            self.due[tried] = self.steps + self.WINDOW
        else:
            self.every[tried] = min(2 * self.every[tried], self.LONGEST)
            self.due[tried] = self.steps + self.every[tried]


# Multiply-adds a shard must have to be worth a thread of its own. A shard costs
# ~25 calls from Python and a hand-over of the GIL around each, whatever its size:
# batch-10 training of a 784-16-16-10 net took 2.3x as long on two shards of 5 rows
# as on one shard; network a (784-128-64-10) gained ~1.2x from two shards of 64 rows
# (13M multiply-adds each), and 784-512-256-10, 1.5x from two of 128 (190M each).
SHARD_MIN_MACS = 1 << 23


def macs_per_example(sizes):
    """Multiply-adds of one example's feedforward and backprop: every layer's product
    and weight gradient, and every layer's error below it but the input's."""
    products = [m * n for m, n in zip(sizes[:-1], sizes[1:])]
    return 3 * sum(products) - products[0]


def shards_for(threads, batch, sizes):
    """How many shards a mini-batch of ``batch`` rows is split into on ``threads``
    threads: one per thread, as long as each keeps SHARD_MIN_MACS of work; at least one.
    (More, smaller shards than threads would balance better, but each costs: on network
    a, splitting a step into 2 shards cost 13% more CPU, into 4, 43%, one after the other.)"""
    worth = batch * macs_per_example(sizes) // SHARD_MIN_MACS
    return max(1, min(threads, batch, worth))


# Parameters from which the reduction and update run on the team (a second round of
# the step) rather than on the caller alone. Each round costs a wake-up of the workers
# (~0.05-0.1 ms on a VM); on network a (109k parameters) the passes are cheaper than
# that, and the second round cost 8% of the step; on 1600-800 (2.5M) it gained 12%.
PARALLEL_UPDATE_FROM = 500_000


def parts_for(threads, n_params):
    """How many parts the flat vector is cut into for the reduction and update on
    ``threads`` threads: two per thread for a large vector, so that each part's few
    arrays stay in a core's cache across the update's passes; else one, the whole
    vector, on the caller."""
    return 2 * threads if threads > 1 and n_params >= PARALLEL_UPDATE_FROM else 1


def worker_modes():
    """How shards may run here, the one tried first first (see ``Pace``): worker processes
    where they can be forked, worker threads, the caller alone. ``BP_WORKERS=threads``
    or ``processes`` leaves out the other kind of worker; ``serial`` leaves out both (every
    shard on the caller: the bits of N threads, on one core)."""
    asked = os.environ.get("BP_WORKERS", "").strip().lower()
    if asked == "serial":
        return ["serial"]
    if asked == "threads" or not crew.available():
        return ["threads", "serial"]
    if asked == "processes":
        return ["processes", "serial"]
    return ["processes", "threads", "serial"]


# The caller's share of a row-wise job moves by SHARE_STEP a step: up while its workers end
# their calls after the caller ends its own work, down while they end before.
SHARE_STEP = 0.004

SHARD_JOB, UPDATE_JOB = 0, 1  # the engine's own registered jobs: a shard of a step, a part of the update
STAGED_PIXELS, STAGED_FLOATS = -1, -2  # where a worker process finds its rows, if not in a buffer


class Engine:
    """Train ``spec``'s network, starting from (Ws, bs) in model order, on mini-batches of up
    to ``batch`` rows with optimizer ``make_opt(theta, n_decay)``, on ``threads`` threads.

    ``inked`` (784,) bool: the inputs that are not 0 in every training image; the
    others must stay 0 in every batch given (``inputs_of()`` drops them). ``rng``
    draws the dropout masks; ``max_norm`` caps each unit's incoming weights.
    """

    def __init__(self, spec, Ws, bs, make_opt, batch, inked, threads=1, dropout=0.0, max_norm=0.0, rng=None):
        self.spec, self.batch = spec, batch
        self.dropout, self.max_norm, self.rng = dropout, max_norm, rng
        self.layout = Layout(spec.sizes, inked)
        k = self.layout.k
        shards = self.shard_count = shards_for(threads, batch, spec.sizes)
        modes = worker_modes() if shards > 1 else ["serial"]
        # what worker processes read or write is in memory shared with them (crew.shared_*)
        forking = "processes" in modes
        empty = self._empty = crew.shared_empty if forking else np.empty
        self.theta = empty(spec.n_params, np.float32)
        self.layout.put(self.theta, Ws, bs)
        self.Ws, self.bs = param_views(self.theta, spec.sizes)
        self.opt = make_opt(self.theta, self.layout.n_weights)  # L2 on weights only
        self.update = Update(self.opt, shards, parts_for(shards, spec.n_params),
                             zeros=crew.shared_zeros if forking else np.zeros)
        # shard t: rows [t * batch // shards, (t + 1) * batch // shards) of every mini-batch
        self.bounds = [t * batch // shards for t in range(shards + 1)]
        self.inputs = empty((batch, k), np.float32)      # a[0] of the batch, every shard's rows
        self.outputs = empty((batch, spec.sizes[-1]), np.float32)
        W_in = [self.Ws[0][:k], *self.Ws[1:]]
        self.shards = []
        for t in range(shards):
            lo, hi = self.bounds[t], self.bounds[t + 1]
            tW, tb = param_views(self.update.shard_targets[t], spec.sizes)
            self.shards.append(Shard(spec, W_in, self.bs, [tW[0][:k], *tW[1:]], tb,
                                     self.inputs[lo:hi], self.outputs[lo:hi], dropout))
        target_W0 = param_views(self.update.target, spec.sizes)[0][0]
        self.blank = target_W0[k:]  # never in a product: its update is the decay alone
        self.hidden = spec.sizes[1:-1]
        # steps between flush_subnormals() calls (None: nothing decays); the caller
        # counts, so that a resumed run flushes where an uninterrupted one did
        self.flush_every = self.opt.flush_every
        self.team = None  # the worker threads (and the caller), started at their first step
        self.crew = None  # the worker processes, forked at the first step in that mode
        if forking:
            # the worker processes' inputs: the pixels, targets and dropout masks of their rows
            self.staged_pixels = empty((batch, k), np.uint8)
            self.staged_targets = empty((batch, spec.sizes[-1]), np.float32)
            self.staged_masks = [empty((batch, w), np.float32) for w in self.hidden] if dropout else []
        self.jobs = [self._shard_job, self._update_job]  # what workers may run: SHARD_JOB, UPDATE_JOB, register()
        self.buffers = []  # (buffer)
        self.lr = empty(1, np.float64)  # the step's learning rate, for the workers' parts of the update
        self.caller_share = 1 / shards  # of a row-wise job's rows (split)
        self.notices = []  # lines for the user (a worker process lost), taken by the caller
        self.pace = Pace(modes)

    def inputs_of(self, X):
        """X (n, 784)'s columns as train_batch takes them (the inked ones, in order)."""
        return self.layout.inputs(X)

    def buffer(self, shape, dtype=np.float32):
        """An uninitialised array that the engine's workers can write too (where they are
        processes, in memory shared with them): for what a registered job writes, and for
        batches (worker processes read their rows of a batch in such a buffer where it is,
        rather than from a copy)."""
        if self.crew is not None:
            raise RuntimeError("buffers are made before the first step (the worker processes start then)")
        array = self._empty(shape, dtype)
        self.buffers.append(array)
        return array

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
        job before it, and let it write only memory shared with them (``shared_empty``)."""
        if self.crew is not None:
            raise RuntimeError("jobs are registered before the first step (the worker processes start then)")
        self.jobs.append(job)
        return len(self.jobs) - 1

    def run_part(self, part):
        """Run one ``(handle, a, b, c)`` of a registered job, here (None: nothing)."""
        if part is not None:
            job, *args = part
            self.jobs[job](*args)

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
        n = len(X)
        if not 0 < n <= self.batch or len(Y) != n:
            raise ValueError(f"a batch of {n} rows with {len(Y)} targets; this engine takes 1..{self.batch}")
        Y = np.asarray(Y, np.float32)  # (as every mode computes with it; no copy if it is)
        masks = dropout_masks(self.rng, n, self.hidden, self.dropout) if self.dropout else None
        coeffs = self.update.coefficients(lr)
        tasks = []
        for t, shard in enumerate(self.shards):
            lo, hi = self.bounds[t], min(self.bounds[t + 1], n)
            if lo >= hi:
                tasks.append(None)
                continue
            own = [m[lo:hi] for m in masks] if masks else None
            shard_coeffs = coeffs if t == 0 else PLAIN
            tasks.append(self._task(shard, X[lo:hi], Y[lo:hi], n, own, shard_coeffs))
        mode = self.pace.choose()
        if mode == "processes" and not self._start_crew():
            mode = self.pace.current()
        start = time.perf_counter()
        if mode == "processes":
            self._run_on_crew(tasks, X, Y, masks, meanwhile)
            if not self.crew.procs:  # a worker was lost, and the round made good (_run_on_crew)
                mode = "serial"
        elif mode == "threads":
            self.team = self.team or Team(self.shard_count - 1)
            self.team.run(tasks, meanwhile and (lambda: [lambda p=p: self.run_part(p) for p in meanwhile() or ()]))
        else:
            for task in tasks:
                if task is not None:
                    task()
            for part in (meanwhile() if meanwhile is not None else None) or ():
                self.run_part(part)
        self._finish(coeffs, lr, mode, sum(t is not None for t in tasks))
        self.pace.record(mode, time.perf_counter() - start)
        return self.outputs[:n]

    def _start_crew(self):
        """Fork the worker processes (once); False, and processes left out from now on, if
        that fails or they were stopped (a worker died, a wait was interrupted)."""
        if self.crew is None:
            try:
                self.crew = crew.Crew(self.shard_count - 1, self.jobs)
            except Exception:  # e.g. a process limit (OSError): threads or the caller alone will do
                self.crew = False
        if not self.crew or not self.crew.procs:
            self.pace.drop("processes")
            return False
        return True

    def _run_on_crew(self, tasks, X, Y, masks, meanwhile):
        """The first shard here, the others on the worker processes, and the parts that
        ``meanwhile`` returns shared out: the first here, the others on the workers."""
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
                self.crew.send(t - 1, *sent[-1])
        try:
            parts = (meanwhile() if meanwhile is not None else None) or ()
            for i, part in enumerate(parts[1:]):
                if part is not None:
                    sent.append(part)
                    self.crew.send(i % self.crew.size, *part)
            if parts:
                self.run_part(parts[0])
            tasks[0]()
        except BaseException:
            self.crew.finish()
            raise
        done_here = time.perf_counter()
        try:
            self.crew.finish()
        except crew.WorkerDied as died:
            # A shard or a warp writes the same values wherever it runs (its gradient buffer,
            # its rows), so this round's calls are run again here, and training goes on
            # without worker processes (the crew is closed).
            for call in sent:
                self.run_part(call)
            self.notices.append(f"warning: {died}; training goes on without worker processes")
            return
        if len(parts) > 1:  # balance the parts of the next batch (see split): who waited for whom?
            waited = self.crew.finished.max() > done_here
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

    @staticmethod
    def _task(shard, X, Y, n, masks, coeffs):
        def task():
            shard.forward(X, masks)
            shard.backward(Y, n, coeffs)
        return task

    def _finish(self, coeffs, lr, mode, shards):
        """The update, once the first ``shards`` shards' products have run (the others: empty):
        the shards' gradients added up and the optimizer's passes, part by part of the flat
        vector, the parts shared out among the workers of ``mode``."""
        if self.update.grad is not None:
            self.blank.fill(0)  # the update uses the gradient as scratch
        elif coeffs.beta_weights != 1.0:
            self.blank *= coeffs.beta_weights  # no gradient: the update's decay alone
        update, count = self.update, len(self.update.parts)
        if count > 1 and mode == "processes":  # part i on the caller if i % size == 0, else a worker
            size = self.crew.size + 1
            self.lr[0] = lr
            for i in range(count):
                if i % size:
                    self.crew.send(i % size - 1, UPDATE_JOB, i, shards)
            try:
                for i in range(0, count, size):
                    update.finish_part(i, lr, shards)
            finally:
                try:
                    self.crew.finish()
                except crew.WorkerDied as died:  # its part of the update may be half done: no way back
                    raise BpError(f"{died} while it updated the weights, which are now unusable; "
                                  "resume the run (--resume: from its last checkpoint), with --threads 1 "
                                  "if this repeats") from None
        elif count > 1 and mode == "threads":
            self.team.run([lambda i=i: update.finish_part(i, lr, shards) for i in range(count)])
        else:
            update.finish(lr, shards)
        if self.max_norm:
            clip_max_norm(self.Ws, self.max_norm)

    @property
    def steps_by_workers(self):
        """Steps run in each mode (since this engine started)."""
        return self.pace.counts

    # -- what the outside sees: model order ---------------------------------
    def params(self):
        """(Ws, bs) in model order (W0 a copy; the others views, valid until the next step)."""
        return self.layout.params(self.theta)

    def state(self):
        """The optimizer's state in model order, by checkpoint name ("v0", "v1", "m0", ..., "t")."""
        return self.layout.state_to_model(self.opt.state())

    def load(self, Ws, bs, state):
        """Take over parameters and optimizer state given in model order."""
        self.layout.put(self.theta, Ws, bs)
        self.opt.load_state(self.layout.state_to_model(state, inverse=True))

    def flush_subnormals(self):
        """Optimizer state too small to matter set to 0 (see ``optim.flush_subnormals``)."""
        self.opt.flush_subnormals()

    def finite(self):
        """Whether every weight and bias is finite. One sum finds out: it is finite only if
        every term is (a weight large enough to overflow the sum has diverged too)."""
        return bool(np.isfinite(self.theta.sum()))

    def close(self):
        if self.team is not None:
            self.team.close()
            self.team = None
        if self.crew:
            self.crew.close()
        self.crew = None
