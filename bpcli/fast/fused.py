"""The optimizer's update as the engine runs it: fused into the gradient's product
where it can be, else a few axpys over the flat parameter vector.

A BLAS product computes ``C <- alpha * A @ B + beta * C``. With the
gradient as ``A @ B`` (``bpcli.fast.shard`` makes every gradient product write
into ``target`` with ``coefficients(lr)``)::

    momentum:   C = v,  alpha = 1,   beta = momentum     v <- momentum v + g
                then    v += weight_decay * w;  w -= lr * v   (two axpys)
    plain SGD:  C = w,  alpha = -lr, beta = 1 - lr * weight_decay (1 for biases)
                                                        w <- w - lr (g + weight_decay w)

so the gradient is never stored and the update costs one pass or none.
Nesterov and Adam need the gradient itself: the products write it into a
buffer (alpha 1, beta 0) and ``finish`` runs the update, Nesterov as axpys,
Adam as ``optim.Adam.step``. With several threads, each shard's products
write into a buffer of its own except the first shard's, which may still
write into v (nothing else reads v during the products); plain SGD then
cannot write into w, which the other shards are reading.

The arithmetic is ``optim.SGD.step``'s and ``optim.Adam.step``'s (the tests
hold the engine to them); only the order of the passes differs.
"""

from typing import NamedTuple

import numpy as np

from . import blas


class Coefficients(NamedTuple):
    """target <- alpha * gradient + beta * target, beta by weights and biases."""

    alpha: float
    beta_weights: float
    beta_biases: float


PLAIN = Coefficients(1.0, 0.0, 0.0)  # target <- gradient


ALIGN = 16  # floats: parts start on 64-byte boundaries, so no two threads share a cache line


class Update:
    """The update of ``opt`` (an ``optim.SGD`` or ``optim.Adam`` over the flat vector),
    with the first shard's products writing into ``target`` and the others' into
    buffers of their own (``shard_targets``).

    After the products, ``finish_part(i, lr)`` adds the shards' gradients up in
    shard order and runs the rest of the update, on part ``i`` of the flat
    vector alone: every pass is element by element, so the ``len(parts)``
    parts can run on different threads at once, and each part's arrays stay
    in its core's cache from one pass to the next. Part boundaries depend on
    the number of parts only, so the same count gives the same bits however
    the parts are scheduled. (Adam's update is one part: it runs after the
    reduction, on the caller.)
    """

    def __init__(self, opt, shards=1, parts=1, zeros=np.zeros):
        # ``zeros(shape, dtype)`` allocates what the update and the shards' products write,
        # e.g. in memory shared with worker processes that run some of them
        self.opt = opt
        theta = opt.theta
        sgd = self.sgd = hasattr(opt, "nesterov")
        if sgd and opt.v is not None:  # every array the parts touch comes from ``zeros``
            opt.v = _moved(opt.v, zeros)
        self.momentum = sgd and opt.v is not None and not opt.nesterov
        # plain SGD may move w inside the product only when no other shard reads w meanwhile
        self.into_w = sgd and opt.v is None and shards == 1
        if self.momentum:
            self.target = opt.v
        elif self.into_w:
            self.target = theta
        else:
            self.target = zeros(theta.shape, theta.dtype)  # the gradient; the update then uses it as scratch
        self.grad = None if self.momentum or self.into_w else self.target
        self.shard_targets = [self.target] + [zeros(theta.shape, theta.dtype) for _ in range(shards - 1)]
        n = len(theta)
        parts = parts if sgd else 1
        cuts = sorted({min(n, -(-i * n // parts // ALIGN) * ALIGN) for i in range(parts)} | {n})
        # NumPy's scratch where BLAS is not used: only the axpys over the gradient need one
        self.scratch = zeros(theta.shape, theta.dtype) if sgd and self.grad is not None else None
        self.parts = [self._part(lo, hi) for lo, hi in zip(cuts, cuts[1:])]

    def _part(self, lo, hi):
        """Entries [lo, hi) of every array the update touches, and its axpys there."""
        opt, part = self.opt, slice(lo, hi)
        decayed = slice(lo, max(lo, min(hi, opt.n_decay)))  # the weights among them
        w, g, s = self.opt.theta, self.grad, self.scratch
        ax = {}
        if self.momentum:
            ax = {"decay": blas.Axpy(w[decayed], opt.v[decayed]), "v_into_w": blas.Axpy(opt.v[part], w[part])}
        elif self.sgd and g is not None:
            ax = {"decay": blas.Axpy(w[decayed], g[decayed], s[decayed]),
                  "g_into_w": blas.Axpy(g[part], w[part], s[part])}
            if opt.v is not None:
                ax.update(g_into_v=blas.Axpy(g[part], opt.v[part], s[part]),
                          v_into_g=blas.Axpy(opt.v[part], g[part], s[part]))
        return {"sum": self.target[part], "others": [t[part] for t in self.shard_targets[1:]],
                "v": opt.v[part] if self.sgd and opt.v is not None else None, "axpys": ax,
                "decays": decayed.stop > decayed.start}

    def coefficients(self, lr):
        """How the first shard's products write: ``target <- alpha * g + beta * target``."""
        opt = self.opt
        if self.momentum:
            return Coefficients(1.0, opt.momentum, opt.momentum)
        if self.into_w:
            return Coefficients(-lr, 1.0 - lr * opt.weight_decay, 1.0)
        return PLAIN

    def finish_part(self, i, lr, shards):
        """Part ``i`` of the rest of the update, once the products of the first ``shards``
        shards have run (a short last batch may leave the others empty): their gradients
        added into ``target`` in shard order, then the optimizer's passes."""
        opt, part = self.opt, self.parts[i]
        total = part["sum"]
        for other in part["others"][:shards - 1]:
            total += other
        if self.into_w:
            return
        if not self.sgd:
            opt.step(self.grad, lr)
            return
        ax = part["axpys"]
        decay = opt.weight_decay if part["decays"] else 0.0
        if self.momentum:
            if decay:
                ax["decay"](decay)                # v += weight_decay * w
            ax["v_into_w"](-lr)                   # w -= lr * v
            return
        if decay:
            ax["decay"](decay)                    # g += weight_decay * w
        if opt.v is None:
            ax["g_into_w"](-lr)                   # w -= lr * g
            return
        part["v"] *= opt.momentum
        ax["g_into_v"](1.0)                       # v = momentum * v + g
        ax["v_into_g"](opt.momentum)
        ax["g_into_w"](-lr)                       # Nesterov: w -= lr * (g + momentum * v)

    def finish(self, lr, shards):
        """The rest of the update, every part on this thread."""
        for i in range(len(self.parts)):
            self.finish_part(i, lr, shards)


def _moved(array, zeros):
    """A copy of ``array`` in memory from ``zeros``."""
    moved = zeros(array.shape, array.dtype)
    moved[...] = array
    return moved
