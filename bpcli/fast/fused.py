"""The optimizer's update as the engine runs it: fused into the gradient's product
where it can be, else a few axpys over the flat parameter vector.

A BLAS product computes ``C <- alpha * A @ B + beta * C``. With the
gradient as ``A @ B`` (``bpcli.fast.step`` makes every gradient product write
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


class Update:
    """The update of ``opt`` (an ``optim.SGD`` or ``optim.Adam`` over the flat vector),
    with the first shard's products writing into ``target`` and the others' into
    buffers of their own (``shard_targets``)."""

    def __init__(self, opt, shards=1):
        self.opt = opt
        theta = opt.theta
        sgd = hasattr(opt, "nesterov")
        self.momentum = sgd and opt.v is not None and not opt.nesterov
        # plain SGD may move w inside the product only when no other shard reads w meanwhile
        self.into_w = sgd and opt.v is None and shards == 1
        if self.momentum:
            self.target = opt.v
        elif self.into_w:
            self.target = theta
        else:
            self.target = np.zeros_like(theta)  # the gradient; the update then uses it as scratch
        self.grad = None if self.momentum or self.into_w else self.target
        self.shard_targets = [self.target] + [np.zeros_like(theta) for _ in range(shards - 1)]
        n = opt.n_decay
        w, g = theta, self.grad
        self.axpys = {}
        if self.momentum:
            self.axpys = {"decay": blas.Axpy(w[:n], opt.v[:n]), "v_into_w": blas.Axpy(opt.v, w)}
        elif sgd and g is not None:
            s = np.empty_like(w)  # NumPy's scratch, where BLAS is not used
            self.axpys = {"decay": blas.Axpy(w[:n], g[:n], s[:n]), "g_into_w": blas.Axpy(g, w, s)}
            if opt.v is not None:
                self.axpys.update(g_into_v=blas.Axpy(g, opt.v, s), v_into_g=blas.Axpy(opt.v, g, s))
        self.sgd = sgd

    def coefficients(self, lr):
        """How the first shard's products write: ``target <- alpha * g + beta * target``."""
        opt = self.opt
        if self.momentum:
            return Coefficients(1.0, opt.momentum, opt.momentum)
        if self.into_w:
            return Coefficients(-lr, 1.0 - lr * opt.weight_decay, 1.0)
        return PLAIN

    def finish(self, lr):
        """The rest of the update, once every product has run and the shards' gradients
        have been added into ``target``."""
        opt, ax = self.opt, self.axpys
        if self.into_w:
            return
        if self.momentum:
            if opt.weight_decay:
                ax["decay"](opt.weight_decay)     # v += weight_decay * w
            ax["v_into_w"](-lr)                   # w -= lr * v
            return
        if not self.sgd:
            opt.step(self.grad, lr)
            return
        if opt.weight_decay:
            ax["decay"](opt.weight_decay)         # g += weight_decay * w
        if opt.v is None:
            ax["g_into_w"](-lr)                   # w -= lr * g
            return
        opt.v *= opt.momentum
        ax["g_into_v"](1.0)                       # v = momentum * v + g
        ax["v_into_g"](opt.momentum)
        ax["g_into_w"](-lr)                       # Nesterov: w -= lr * (g + momentum * v)
