"""One shard's feedforward and backprop, in preallocated memory.

``network.forward`` and ``network.backward`` are the reference: they say what
a step computes. The engine splits each mini-batch into shards, one per
thread, and runs this class on each. It computes the same thing (the tests
hold the engine to the reference for every activation, output and cost,
with dropout, short batches and any thread count) with the savings that
matter on a CPU:

* every z, delta and gradient lives in memory allocated once, and every
  matrix product is prepared once (``blas.Product``);
* pixels stay 0..255: the first layer's products carry the 1/255 as their
  alpha, so a batch enters by a plain uint8 -> float32 copy;
* activations are computed in place (z becomes a), and the gradient's
  products write straight into the update (``fused.Update``).

The cost is the mean over the whole mini-batch, so a shard's output error
is divided by the mini-batch's size, not its own: the shards' gradients then
add up to the mini-batch's.
"""

import numpy as np

from .blas import Product
from .kernels import ACTIVATIONS, OUTPUTS, output_delta

PIXEL_SCALE = 1 / 255


class Shard:
    """Rows ``[lo, lo + size)`` of every mini-batch.

    ``Ws``, ``bs``: views of the parameters (W0 cut to the first ``k`` inputs:
    the others are 0 in every example); ``tW``, ``tb``: views of where this
    shard's gradient products write; ``inputs`` (size, k) and ``outputs``
    (size, 10): this shard's rows of the engine's batch buffers.
    """

    def __init__(self, spec, Ws, bs, tW, tb, inputs, outputs, dropout=0.0):
        self.spec, self.dropout = spec, dropout
        self.f, self.fprime = ACTIVATIONS[spec.activation]
        self.output = OUTPUTS[spec.output]
        sizes = spec.sizes
        L = self.L = len(sizes) - 1
        size, dtype = len(inputs), inputs.dtype
        self.inputs = inputs
        self.a = [inputs] + [np.empty((size, n), dtype) for n in sizes[1:L]] + [outputs]     # a[l]
        self.delta = [None] + [np.empty((size, n), dtype) for n in sizes[1:]]               # delta[l], l >= 1
        # with dropout, a[l] is kept for f' and the next layer is fed a dropped copy
        self.fed = [inputs] + [np.empty_like(a) if dropout else a for a in self.a[1:L]]
        self.masks = [None] * L
        self.ones = np.ones((1, size), dtype)
        ones_column = np.ones((size, 1), dtype)
        self.scale = 1.0  # what the first layer's products multiply by
        # z = a @ W + b as two products: every row of z set to b, then a @ W added in
        # (beta = 1); cheaper than NumPy's broadcast add afterwards
        self.b_rows = [Product(ones_column, b[None, :], z) for b, z in zip(bs, self.a[1:])]
        self.z_of = [Product(self.fed[l], Ws[l], self.a[l + 1]) for l in range(L)]
        self.dW_of = [Product(self.fed[l], self.delta[l + 1], tW[l], trans_a=True, batch="k") for l in range(L)]
        self.db_of = [Product(self.ones, self.delta[l + 1], tb[l][None, :], batch="k") for l in range(L)]
        self.delta_below = [None] + [Product(self.delta[l + 1], Ws[l], self.delta[l], trans_b=True)
                                     for l in range(1, L)]

    def forward(self, X, masks):
        """Feedforward this shard's rows X (n, k): uint8 pixels, or the floats already
        in ``inputs``. ``masks``: this shard's rows of each hidden layer's dropout mask."""
        n, L, a = len(X), self.L, self.a
        if X.dtype == np.uint8:
            np.copyto(self.inputs[:n], X)  # the 1/255 rides on the first layer's alpha
            self.scale = PIXEL_SCALE
        else:
            if X.base is not self.inputs and X is not self.inputs[:n]:
                np.copyto(self.inputs[:n], X)
            self.scale = 1.0
        for l in range(L):
            z = a[l + 1][:n]
            self.b_rows[l](n)                                   # z = b
            self.z_of[l](n, self.scale if l == 0 else 1.0, 1.0)  # z += scale * a[l] @ W[l]
            if l == L - 1:
                self.output(z)
                return
            self.f(z)        # in place: z becomes a[l+1]
            if self.dropout:
                self.masks[l + 1] = masks[l]
                np.multiply(z, masks[l], out=self.fed[l + 1][:n])

    def backward(self, Y, batch, coeffs):
        """Backpropagate this shard's targets Y (n, 10) of a mini-batch of ``batch`` rows,
        writing each gradient as ``target <- alpha * gradient + beta * target``."""
        n, L, spec = len(Y), self.L, self.spec
        output_delta(self.a[L][:n], Y, spec.output, spec.loss, batch, out=self.delta[L][:n])
        alpha, beta_w, beta_b = coeffs
        for l in range(L - 1, -1, -1):
            if l > 0:  # delta[l] = (delta[l+1] @ W[l].T) * f'(z[l]), while W[l] is unchanged
                below = self.delta[l][:n]
                self.delta_below[l](n)
                if self.dropout:
                    below *= self.masks[l][:n]
                below *= self.fprime(self.a[l][:n])
            # dC/dW[l] = a[l].T @ delta[l+1] and dC/db[l] = 1^T delta[l+1], into the update
            self.dW_of[l](n, alpha * self.scale if l == 0 else alpha, beta_w)
            self.db_of[l](n, alpha, beta_b)
