"""The engine's fused core: one step of mini-batch SGD, computed on one process.

``bpcli.network`` and ``bpcli.optim`` say what a step computes; ``FusedCore``
computes the same thing (the tests hold it to the reference for every
activation, output, cost and optimizer) with the savings that matter on a
CPU, each in a module of its own:

* the layout (``layout``): W0's rows inked pixels first, one flat vector;
* the shards (``shard``): a mini-batch's rows cut into shards, each with
  preallocated memory, in-place activations and its matrix products
  prepared once, pixels entering as uint8;
* the update (``fused``): SGD written into the gradient's own product, the
  shards' gradients added up in shard order;
* the BLAS calls (``blas``), bounds-checked.

Here the shards run one after the other on the caller. The parallel layer
(``bpcli.fast.parallel``, used by ``bpcli.fast.engine.Engine``) runs the
same shards and the same parts of the update on other cores; the bits are
the same wherever they run, because each shard writes to memory of its own.
"""

import numpy as np

from ..batchjobs import OneThreadJobs
from ..network import dropout_mask
from ..optim import clip_max_norm
from .fused import PLAIN, Update
from .layout import Layout, param_views
from .shard import Shard


def dropout_masks(rng, shape_rows, widths, rate, dtype=np.float32):
    """Inverted-dropout masks for a batch, layer by layer, in the reference's draw order
    (drawn here, on the calling thread, so that the stream never depends on the threads)."""
    return [dropout_mask(rng, (shape_rows, w), rate, dtype) for w in widths]


class FusedCore(OneThreadJobs):
    """Train ``spec``'s network, starting from (Ws, bs) in model order, on mini-batches of up
    to ``batch`` rows with optimizer ``make_opt(theta, n_decay)``, each cut into ``shards``
    shards, the update into ``parts`` parts of the flat vector.

    ``inked`` (784,) bool: the inputs that are not 0 in every training image; the
    others must stay 0 in every batch given (``inputs_of()`` drops them). ``rng``
    draws the dropout masks; ``max_norm`` caps each unit's incoming weights.
    ``empty(shape, dtype)`` and ``zeros(shape, dtype)`` allocate every array a shard
    or a part of the update reads or writes (the parallel layer passes memory shared
    with its worker processes).
    """

    def __init__(self, spec, Ws, bs, make_opt, batch, inked, shards=1, parts=1, dropout=0.0, max_norm=0.0,
                 rng=None, empty=np.empty, zeros=np.zeros):
        self.spec, self.batch = spec, batch
        self.dropout, self.max_norm, self.rng = dropout, max_norm, rng
        self._empty = empty
        self.layout = Layout(spec.sizes, inked)
        k = self.layout.k
        self.shard_count = shards
        self.theta = empty(spec.n_params, np.float32)
        self.layout.put(self.theta, Ws, bs)
        self.Ws, self.bs = param_views(self.theta, spec.sizes)
        self.opt = make_opt(self.theta, self.layout.n_weights)  # L2 on weights only
        self.update = Update(self.opt, shards, parts, zeros=zeros)
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
        self.jobs = []  # what ``run_part`` may run: ``register()``
        self.buffers = []  # (buffer)

    def inputs_of(self, X):
        """X (n, 784)'s columns as train_batch takes them (the inked ones, in order)."""
        return self.layout.inputs(X)

    def buffer(self, shape, dtype=np.float32):
        """An uninitialised array for batches and for what a registered job writes (from
        ``empty``: where the engine has worker processes, memory shared with them)."""
        array = self._empty(shape, dtype)
        self.buffers.append(array)
        return array

    def train_batch(self, X, Y, lr, meanwhile=None):
        """One step of mini-batch SGD on X (n, k) and targets Y (n, 10), n <= batch.

        X: uint8 pixels in ``inputs_of`` order, or float32 in [0, 1]. Returns a[L]
        (n, 10) before the update, valid until the next call. ``meanwhile``: a
        function to run after the shards, such as preparing the next batch; it
        must not touch X, Y or the engine. It may return a list of parts
        ``(handle, a, b, c)`` of registered jobs (``register``), or None.
        """
        Y, masks, coeffs, tasks = self._tasks(X, Y, lr)
        self._run_here(tasks, meanwhile)
        self._finish(coeffs, lr, sum(t is not None for t in tasks))
        return self.outputs[:len(X)]

    def _tasks(self, X, Y, lr):
        """A step's inputs checked, its dropout masks drawn, how the first shard's products
        write (``Update.coefficients``), and each shard's feedforward + backprop as a
        function of no arguments (None for a shard with no rows in a short batch)."""
        n = len(X)
        if not 0 < n <= self.batch or len(Y) != n:
            raise ValueError(f"a batch of {n} rows with {len(Y)} targets; this engine takes 1..{self.batch}")
        Y = np.asarray(Y, np.float32)  # (as every shard computes with it; no copy if it is)
        masks = dropout_masks(self.rng, n, self.hidden, self.dropout) if self.dropout else None
        coeffs = self.update.coefficients(lr)
        tasks = []
        for t, shard in enumerate(self.shards):
            lo, hi = self.bounds[t], min(self.bounds[t + 1], n)
            if lo >= hi:
                tasks.append(None)
                continue
            own = [m[lo:hi] for m in masks] if masks else None
            tasks.append(_task(shard, X[lo:hi], Y[lo:hi], n, own, coeffs if t == 0 else PLAIN))
        return Y, masks, coeffs, tasks

    def _run_here(self, tasks, meanwhile):
        """Every shard on this thread, in order, then ``meanwhile`` and the parts it returns."""
        for task in tasks:
            if task is not None:
                task()
        for part in (meanwhile() if meanwhile is not None else None) or ():
            self.run_part(part)

    def _finish(self, coeffs, lr, shards, run_parts=None):
        """The update, once the first ``shards`` shards' products have run (the others: empty):
        the shards' gradients added up and the optimizer's passes, part by part of the flat
        vector: here in order, or by ``run_parts(lr, shards)`` (the parallel layer's workers)."""
        if self.update.grad is not None:
            self.blank.fill(0)  # the update uses the gradient as scratch
        elif coeffs.beta_weights != 1.0:
            self.blank *= coeffs.beta_weights  # no gradient: the update's decay alone
        if run_parts is None:
            self.update.finish(lr, shards)
        else:
            run_parts(lr, shards)
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


def _task(shard, X, Y, n, masks, coeffs):
    def task():
        shard.forward(X, masks)
        shard.backward(Y, n, coeffs)
    return task
