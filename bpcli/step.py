"""One training step, feedforward + backprop + update, in preallocated memory.

``network.forward`` and ``network.backward`` are the reference: they say what
a step computes, and evaluation, ``bp explain`` and the gradient check use
them. Training runs this class instead. It computes the same thing (the
tests hold it to the reference for every activation, output and cost, with
dropout and short batches) with three savings that matter on a CPU:

* every z, delta and gradient lives in memory allocated once, and every
  matrix product is prepared once (``blas.Product``);
* pixels stay 0..255: the first layer's products carry the 1/255 as their
  alpha, so a batch enters by a plain uint8 -> float32 copy;
* for SGD the gradient's product writes straight into the update,
  ``C <- alpha * a.T @ delta + beta * C``: into the velocity with
  beta = momentum, or into the weights with alpha = -lr (``optim.FusedSGD``).
  The gradient is never stored, and the rest of the update is one axpy or
  nothing.

Without a usable BLAS (``blas.available()`` False) the step uses NumPy's
matmul, writes the gradient into a buffer and calls ``opt.step``: the same
numbers up to float rounding.
"""

import numpy as np

from . import blas
from .metrics import to_float
from .network import ACTIVATIONS, OUTPUTS, dropout_mask, output_delta, param_views

PIXEL_SCALE = 1 / 255


class Step:
    """Train the parameters in the flat ``theta`` with optimizer ``opt`` on
    batches of up to ``batch`` rows.

    Only the first ``k`` inputs (rows of W0) take part in the products: the
    caller has put the inputs that are 0 in every example (MNIST's border)
    last. Their gradient is 0, so their update is the optimizer's decay alone.
    """

    def __init__(self, spec, theta, opt, batch, k, dropout=0.0, rng=None):
        self.spec, self.opt, self.dropout, self.rng = spec, opt, dropout, rng
        self.f, self.fprime = ACTIVATIONS[spec.activation]
        sizes = spec.sizes
        L = self.L = len(sizes) - 1
        Ws, self.bs = param_views(theta, sizes)
        self.Ws = [Ws[0][:k], *Ws[1:]]
        self.fast = blas.available() and theta.dtype == np.float32
        self.fused = self.fast and opt.fused is not None
        # where the gradient's products write: the optimizer's own vector when
        # fused, else a gradient buffer that opt.step then reads
        self.grad = None if self.fused else np.zeros_like(theta)
        tW, self.tb = param_views(opt.fused.target if self.fused else self.grad, sizes)
        self.tW = [tW[0][:k], *tW[1:]]
        self.blank = tW[0][k:]
        dtype = theta.dtype
        self.inputs = np.empty((batch, k), dtype)                                    # a[0] = X
        self.a = [self.inputs] + [np.empty((batch, n), dtype) for n in sizes[1:]]   # a[l]
        self.delta = [None] + [np.empty((batch, n), dtype) for n in sizes[1:]]      # delta[l], l >= 1
        # with dropout, a[l] is kept for f' and the next layer is fed a dropped copy
        self.fed = [self.inputs] + [np.empty_like(a) if dropout else a for a in self.a[1:L]]
        self.masks = [None] * L
        ones = np.ones(batch, dtype)
        self.ones_row, ones_column = ones[None, :], ones[:, None]
        self.scale = 1.0  # what the first layer's products multiply by
        if self.fast:
            P = blas.Product
            # z = a @ W + b as two products: every row of z set to b, then a @ W added in
            # (beta = 1); cheaper than NumPy's broadcast add afterwards
            self.b_rows = [P(ones_column, b[None, :], z) for b, z in zip(self.bs, self.a[1:])]
            self.z_of = [P(self.fed[l], self.Ws[l], self.a[l + 1]) for l in range(L)]
            self.dW_of = [P(self.fed[l], self.delta[l + 1], self.tW[l], trans_a=True, batch="k") for l in range(L)]
            self.db_of = [P(self.ones_row, self.delta[l + 1], self.tb[l][None, :], batch="k") for l in range(L)]
            self.delta_below = [None] + [P(self.delta[l + 1], self.Ws[l], self.delta[l], trans_b=True)
                                         for l in range(1, L)]

    def forward(self, X):
        """Feedforward a batch X (n, k): uint8 pixels, or floats in [0, 1] (best
        written straight into ``inputs``). Returns a[L] (n, 10), valid until the
        next call."""
        n, L, a = len(X), self.L, self.a
        if X.dtype == np.uint8 and self.fast:
            np.copyto(self.inputs[:n], X)  # the 1/255 rides on the first layer's alpha
            self.scale = PIXEL_SCALE
        else:
            if X.dtype == np.uint8:
                to_float(X, out=self.inputs[:n])
            elif X.base is not self.inputs:
                np.copyto(self.inputs[:n], X)
            self.scale = 1.0
        for l in range(L):
            z = a[l + 1][:n]
            if self.fast:    # z = b + scale * a[l] @ W[l]
                self.b_rows[l](n)
                self.z_of[l](n, self.scale if l == 0 else 1.0, 1.0)
            else:
                np.matmul(self.fed[l][:n], self.Ws[l], out=z)
                z += self.bs[l]
            if l == L - 1:
                return OUTPUTS[self.spec.output](z)
            self.f(z)        # in place: z becomes a[l+1]
            if self.dropout:
                self.masks[l + 1] = mask = dropout_mask(self.rng, z.shape, self.dropout, z.dtype)
                np.multiply(z, mask, out=self.fed[l + 1][:n])

    def backward(self, Y, lr):
        """Backpropagate the cost of targets Y (n, 10) and update at learning rate lr."""
        n, L, spec = len(Y), self.L, self.spec
        coeffs = self.opt.fused.coefficients(lr) if self.fused else None
        output_delta(self.a[L][:n], Y, spec.output, spec.loss, out=self.delta[L][:n])
        for l in range(L - 1, -1, -1):
            if l > 0:  # delta[l] = (delta[l+1] @ W[l].T) * f'(z[l]), while W[l] is unchanged
                below = self.delta[l][:n]
                if self.fast:
                    self.delta_below[l](n)
                else:
                    np.matmul(self.delta[l + 1][:n], self.Ws[l].T, out=below)
                if self.dropout:
                    below *= self.masks[l]
                below *= self.fprime(self.a[l][:n])
            self.gradient(l, n, coeffs)
        if coeffs is None:
            self.blank.fill(0)
            self.opt.step(self.grad, lr)
        else:
            if coeffs.beta_weights != 1.0:
                self.blank *= coeffs.beta_weights  # no gradient: the update's decay alone
            self.opt.fused.finish(lr)

    def gradient(self, l, n, coeffs):
        """dC/dW[l] = a[l].T @ delta[l+1] and dC/db[l] = 1^T delta[l+1], written plainly,
        or into the update as ``target <- alpha * gradient + beta * target``."""
        if not self.fast:
            delta = self.delta[l + 1][:n]
            np.matmul(self.fed[l][:n].T, delta, out=self.tW[l])
            np.matmul(self.ones_row[0, :n], delta, out=self.tb[l])
            return
        alpha, beta_w, beta_b = (1.0, 0.0, 0.0) if coeffs is None else coeffs
        self.dW_of[l](n, alpha * self.scale if l == 0 else alpha, beta_w)
        self.db_of[l](n, alpha, beta_b)
