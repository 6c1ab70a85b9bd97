"""The reference engine: training with the code bp teaches, and nothing else.

``bp train --engine reference`` (``train.engine: reference``) trains every
mini-batch with ``network.forward``, ``network.backward`` and an optimizer of
``optim.py``, one plain NumPy call after another on one thread: the
equations as README writes them, the code to read and to step through in a
debugger. The fast engine (``bpcli.fast``, the default) trains the same
network the same way, faster (docs/performance.md measures by how much);
the tests hold the two to the same weights, within float32 rounding, for
every activation, output, cost and optimizer (``tests/test_engines.py``,
``tests/test_fast.py``).

Both answer one interface, which ``train.Run`` uses:

    train_batch(X, Y, lr, meanwhile)   one step of mini-batch SGD; returns a[L]
    params(), state(), load(Ws, bs, state)   the model and optimizer, in model order
    inputs_of(X), buffer(shape), register(job), run_part(part), split(n)
                                       where batches live and who prepares them
    flush_every, flush_subnormals(), finite(), notices, steps_by_workers, close()
"""

import numpy as np

from .fast.layout import n_weights, param_views
from .batchjobs import OneThreadJobs
from .network import backward, forward
from .optim import clip_max_norm

PIXEL_SCALE = np.float32(1 / 255)


class ReferenceEngine(OneThreadJobs):
    """Train ``spec``'s network from (Ws, bs) with optimizer ``make_opt(theta, n_decay)``.

    The parameters live in one flat vector (all weights, then all biases: the
    optimizers' layout), seen as the layers' arrays ``Ws``, ``bs``. ``rng``
    draws the dropout masks, in the order ``network.forward`` draws them.
    ``batch``, ``inked`` and ``threads`` are the fast engine's concerns: here
    every pixel takes part, on one thread.
    """

    def __init__(self, spec, Ws, bs, make_opt, batch, inked=None, threads=1, dropout=0.0, max_norm=0.0,
                 rng=None):
        self.spec, self.batch = spec, batch
        self.dropout, self.max_norm, self.rng = dropout, max_norm, rng
        self.theta = np.empty(spec.n_params, np.float32)
        self.Ws, self.bs = param_views(self.theta, spec.sizes)
        self.grad = np.empty_like(self.theta)
        self.dWs, self.dbs = param_views(self.grad, spec.sizes)
        self.opt = make_opt(self.theta, n_weights(spec.sizes))  # L2 on the weights only
        self.load(Ws, bs, self.opt.state())
        self.flush_every = self.opt.flush_every
        self.jobs, self.notices, self.steps = [], [], 0

    def train_batch(self, X, Y, lr, meanwhile=None):
        """One step of mini-batch SGD on X (n, 784) and targets Y (n, 10); returns a[L]."""
        n = len(X)
        if not 0 < n <= self.batch or len(Y) != n:
            raise ValueError(f"a batch of {n} rows with {len(Y)} targets; this engine takes 1..{self.batch}")
        X = X * PIXEL_SCALE if X.dtype == np.uint8 else np.asarray(X, np.float32)
        # feedforward, then the backward pass: dC/dW and dC/db of the batch's mean cost C
        activations, masks = forward(self.Ws, self.bs, X, self.spec, self.dropout, self.rng)
        dWs, dbs = backward(self.Ws, activations, masks, np.asarray(Y, np.float32), self.spec)
        for view, d in zip(self.dWs + self.dbs, dWs + dbs):
            view[...] = d
        # w <- w - lr * dC/dw (with the optimizer's momentum, decay, ...)
        self.opt.step(self.grad, lr)
        if self.max_norm:
            clip_max_norm(self.Ws, self.max_norm)
        for part in (meanwhile() if meanwhile is not None else None) or ():
            self.run_part(part)  # the next batch, prepared after this one: one thread does all
        self.steps += 1
        return activations[-1]

    # -- the model and optimizer, in model order ------------------------------
    def params(self):
        return list(self.Ws), list(self.bs)

    def state(self):
        return self.opt.state()

    def load(self, Ws, bs, state):
        for view, array in zip(self.Ws + self.bs, list(Ws) + list(bs)):
            view[...] = array
        self.opt.load_state(state)

    def flush_subnormals(self):
        self.opt.flush_subnormals()

    def finite(self):
        return bool(np.isfinite(self.theta).all())

    @property
    def steps_by_workers(self):
        return {"serial": self.steps}

    # -- where batches live and who prepares them: here, on one thread --------
    def inputs_of(self, X):
        return X

    def buffer(self, shape, dtype=np.float32):
        return np.empty(shape, dtype)

    def close(self):
        pass
