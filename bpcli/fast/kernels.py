"""The engine's activations and output error, in place: each writes its result
over its input (z becomes a), so a step allocates nothing.

``bpcli.network`` holds the same functions written out of place, as the
equations read; the tests hold these to those. The derivatives, which take
the activation a = f(z) and make a new array, are the reference's own.
"""

import functools

import numpy as np

# the derivatives take a = f(z) and allocate their result: the reference's serve as they are
from ..network import LEAKY_SLOPE, leaky_relu_prime, relu_prime, sigmoid_prime, tanh_prime


def sigmoid(z):
    # 1 / (1 + exp(-z)) written as (1 + tanh(z / 2)) / 2: the same function, but
    # tanh never overflows, so no clipping is needed (and it is fewer calls)
    z *= 0.5
    np.tanh(z, out=z)
    z += 1.0
    z *= 0.5
    return z


def tanh(z):
    return np.tanh(z, out=z)


def relu(z):
    return np.maximum(z, 0.0, out=z)


def leaky_relu(z):
    return np.maximum(z, LEAKY_SLOPE * z, out=z)  # z where z > 0, else LEAKY_SLOPE z


def softmax(z):
    # Softmax is unchanged by subtracting a constant from a row; subtracting the
    # batch's largest z keeps exp from overflowing, and finding it is ~10x
    # cheaper than a max per row of a (n, 10) array. Only a row lying ~87 below
    # that max would underflow to all zeros: such a row gets its own max.
    z -= z.max()
    e = np.exp(z)
    row_sums = row_sum(e)
    if row_sums.min() < 1e-30:
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=e)
        row_sums = row_sum(e)
    return np.divide(e, row_sums, out=z)


def row_sum(x):
    """x.sum(axis=1, keepdims=True) as the matrix product x @ 1: faster on short rows."""
    return x @ _ones_column(x.shape[1], x.dtype)


@functools.lru_cache(maxsize=8)
def _ones_column(k, dtype):
    return np.ones((k, 1), dtype)


ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (tanh, tanh_prime),
    "relu": (relu, relu_prime),
    "leaky_relu": (leaky_relu, leaky_relu_prime),
}
OUTPUTS = {"softmax": softmax, "sigmoid": sigmoid}


def output_delta(A, Y, output, loss, batch, out):
    """delta[L] = dC/dz[L] (n, k) into ``out``, for C the mean cost over a mini-batch of
    ``batch`` rows (A and Y may be a shard of it)."""
    dC_dA = np.subtract(A, Y, out=out)
    if loss == "cross_entropy":  # both outputs: dC0/dz = a - y
        dC_dA *= 1.0 / batch
        return dC_dA
    dC_dA *= 2.0 / batch
    if output == "sigmoid":
        dC_dA *= sigmoid_prime(A)
        return dC_dA
    # softmax Jacobian: dA_j/dz_i = A_j (delta_ij - A_i), applied row by row
    return np.multiply(A, dC_dA - np.sum(dC_dA * A, axis=1, keepdims=True), out=dC_dA)
