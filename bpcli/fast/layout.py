"""How the engine lays out the model: one flat vector, W0's rows inked pixels first.

Pixels that are 0 in every training image (MNIST's border) add nothing to
z = x @ W and get no gradient (dC/dW = x^T delta). The engine keeps W0's rows
in the order "inked pixels first" and leaves the others out of its two
largest matrix products; everything outside the engine sees the true pixel
order. All weights, then all biases, live in one flat vector, so an
optimizer updates every parameter with a few calls on one array, and weight
decay applies to the weights' prefix alone.
"""

import numpy as np


def param_views(flat, sizes):
    """Views (Ws, bs) into one flat vector laid out as all weights, then all biases."""
    Ws, bs, i = [], [], 0
    for m, n in zip(sizes[:-1], sizes[1:]):
        Ws.append(flat[i:i + m * n].reshape(m, n))
        i += m * n
    for n in sizes[1:]:
        bs.append(flat[i:i + n])
        i += n
    return Ws, bs


def n_weights(sizes):
    return sum(m * n for m, n in zip(sizes[:-1], sizes[1:]))


class Layout:
    """The inked-first row order of W0 and the flat vector's shape, for ``sizes``.

    ``inked`` (784,) bool: the inputs that are not 0 in every training image.
    """

    def __init__(self, sizes, inked):
        self.sizes = sizes
        self.order = np.concatenate([np.flatnonzero(inked), np.flatnonzero(~inked)])
        self.k = int(inked.sum())
        self.n_weights = n_weights(sizes)

    def inputs(self, X):
        """X (n, 784)'s columns as the engine reads them: the inked ones, in order."""
        if self.k == len(self.order) and (self.order == np.arange(self.k)).all():
            return X
        return np.ascontiguousarray(X[:, self.order[:self.k]])

    def to_model(self, W0):
        """W0 (or any array shaped like it) from the engine's row order to the true pixel order."""
        out = np.empty_like(W0)
        out[self.order] = W0
        return out

    def from_model(self, W0):
        return W0[self.order]

    def put(self, flat, Ws, bs):
        """Write (Ws, bs), given in model order, into the flat vector, layer by layer."""
        W_views, b_views = param_views(flat, self.sizes)
        W_views[0][...] = self.from_model(Ws[0])
        for view, array in zip(W_views[1:] + b_views, list(Ws[1:]) + list(bs)):
            view[...] = array

    def params(self, flat):
        """(Ws, bs) in model order from a flat vector (W0 copied, the rest views)."""
        Ws, bs = param_views(flat, self.sizes)
        return [self.to_model(Ws[0]), *Ws[1:]], bs

    def state_to_model(self, state, inverse=False):
        """Optimizer state ({"v0": weights part, "v1": biases part, ...}) with the W0 block
        of each weights part reordered; inverse: from model order to the engine's."""
        rows, cols = self.sizes[0], self.sizes[1]
        out = {}
        for key, arr in state.items():
            if key.endswith("0") and arr.ndim == 1:   # the weights' part: W0 first
                arr = arr.copy()
                block = arr[:rows * cols].reshape(rows, cols)
                block[...] = self.from_model(block.copy()) if inverse else self.to_model(block)
            out[key] = arr
        return out
