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
* the threads (``threads``): on more than one thread, each mini-batch is
  split into ``shards_for(threads, ...)`` shards (one per thread, if each is
  worth one), which the threads share out as
  they come free (a thread held back by another process then costs one
  shard, not a fixed share); every shard's gradient goes to memory of its
  own and they are added up in shard order, so the same seed and thread
  count give the same weights, bit for bit, however the threads were
  scheduled. It is the same mini-batch SGD as on one thread (not Hogwild):
  only float rounding differs. When another process holds a core, the
  caller may run the shards alone, if that is faster (``Pace``).

Interface: ``train_batch(X, Y, lr)`` trains on one mini-batch; ``params()``,
``state()`` and ``load()`` see parameters and optimizer state in model order
(true pixel order, the checkpoint's names).
"""

import time

import numpy as np

from ..network import dropout_mask
from ..optim import clip_max_norm
from . import blas
from .fused import Update
from .layout import Layout, param_views
from .step import Shard
from .threads import Team, single_threaded_blas  # noqa: F401 (train enters it)

__all__ = ["Engine", "blas", "shards_for", "single_threaded_blas"]


def dropout_masks(rng, shape_rows, widths, rate, dtype=np.float32):
    """Inverted-dropout masks for a batch, layer by layer, in the reference's draw order
    (drawn here, on the calling thread, so that the stream never depends on the threads)."""
    return [dropout_mask(rng, (shape_rows, w), rate, dtype) for w in widths]


class Pace:
    """Whether the shards of a step run on the team or, one after the other, on the caller.

    Both give the same bits (a shard's result never depends on its thread), so
    the choice is speed alone: when another process holds a core, a thread
    that shares it stalls every step, and the caller alone is faster. The
    engine times its steps in the mode it runs, tries the other mode for a few
    steps every ``EVERY`` steps, and keeps the faster one.
    """

    EVERY, TRIAL = 200, 8

    def __init__(self):
        self.parallel = True
        self.seconds = {True: None, False: None}  # recent step time of each mode
        self.steps = 0
        self.trial = 0  # steps left in the current trial of the other mode

    def choose(self):
        self.steps += 1
        if self.trial == 0 and self.steps % self.EVERY == 0:
            self.trial = self.TRIAL
        return self.parallel if self.trial == 0 else not self.parallel

    def record(self, parallel, seconds):
        old = self.seconds[parallel]
        self.seconds[parallel] = seconds if old is None else 0.8 * old + 0.2 * seconds
        if self.trial:
            self.trial -= 1
            if self.trial == 0 and None not in self.seconds.values():
                self.parallel = self.seconds[True] <= self.seconds[False]


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
        self.theta = np.empty(spec.n_params, np.float32)
        self.layout.put(self.theta, Ws, bs)
        self.Ws, self.bs = param_views(self.theta, spec.sizes)
        self.opt = make_opt(self.theta, self.layout.n_weights)  # L2 on weights only
        shards = self.shard_count = shards_for(threads, batch, spec.sizes)
        self.update = Update(self.opt, shards, parts_for(shards, spec.n_params))
        # shard t: rows [t * batch // shards, (t + 1) * batch // shards) of every mini-batch
        self.bounds = [t * batch // shards for t in range(shards + 1)]
        self.inputs = np.empty((batch, k), np.float32)      # a[0] of the batch, every shard's rows
        self.outputs = np.empty((batch, spec.sizes[-1]), np.float32)
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
        self.team = Team(shards - 1) if shards > 1 else None  # and the caller
        self.pace = Pace()

    def inputs_of(self, X):
        """X (n, 784)'s columns as train_batch takes them (the inked ones, in order)."""
        return self.layout.inputs(X)

    def train_batch(self, X, Y, lr, meanwhile=None):
        """One step of mini-batch SGD on X (n, k) and targets Y (n, 10), n <= batch.

        X: uint8 pixels in ``inputs_of`` order, or float32 in [0, 1]. Returns a[L]
        (n, 10) before the update, valid until the next call. ``meanwhile``: a
        function to run while the threads compute (on one thread: after them),
        such as preparing the next batch; it must not touch X, Y or the engine.
        It may return a list of more such functions, which the threads share out
        with the shards.
        """
        n = len(X)
        if not 0 < n <= self.batch or len(Y) != n:
            raise ValueError(f"a batch of {n} rows with {len(Y)} targets; this engine takes 1..{self.batch}")
        masks = dropout_masks(self.rng, n, self.hidden, self.dropout) if self.dropout else None
        coeffs = self.update.coefficients(lr)
        tasks = []
        for t, shard in enumerate(self.shards):
            lo, hi = self.bounds[t], min(self.bounds[t + 1], n)
            if lo >= hi:
                tasks.append(None)
                continue
            own = [m[lo:hi] for m in masks] if masks else None
            shard_coeffs = coeffs if t == 0 else (1.0, 0.0, 0.0)
            tasks.append(self._task(shard, X[lo:hi], Y[lo:hi], n, own, shard_coeffs))
        parallel = self.team is not None and self.pace.choose()
        start = time.perf_counter()
        if parallel:
            self.team.run(tasks, meanwhile)
        else:
            for task in tasks:
                if task is not None:
                    task()
            for more in (meanwhile() if meanwhile is not None else None) or ():
                more()
        self._finish(coeffs, lr, parallel, sum(task is not None for task in tasks))
        if self.team is not None:
            self.pace.record(parallel, time.perf_counter() - start)
        return self.outputs[:n]

    @staticmethod
    def _task(shard, X, Y, n, masks, coeffs):
        def task():
            shard.forward(X, masks)
            shard.backward(Y, n, coeffs)
        return task

    def _finish(self, coeffs, lr, parallel, shards):
        """The update, once the first ``shards`` shards' products have run (the others: empty)."""
        if self.update.grad is not None:
            self.blank.fill(0)  # the update uses the gradient as scratch
        elif coeffs.beta_weights != 1.0:
            self.blank *= coeffs.beta_weights  # no gradient: the update's decay alone
        # the shards' gradients added up and the update, part by part of the flat vector
        update = self.update
        if parallel and len(update.parts) > 1:
            self.team.run([lambda i=i: update.finish_part(i, lr, shards) for i in range(len(update.parts))])
        else:
            update.finish(lr, shards)
        if self.max_norm:
            clip_max_norm(self.Ws, self.max_norm)

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
