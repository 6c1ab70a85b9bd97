"""The multilayer perceptron and its backpropagation, in plain NumPy.

Notation (batch-major: one row per example, as in scikit-learn)::

    X        (n, 784)            the mini-batch; a[0] = X
    W[l]     (fan_in, fan_out)   weights of layer l = 1..L
    b[l]     (fan_out,)          biases
    z[l]   = a[l-1] @ W[l] + b[l]        weighted input       (n, fan_out)
    a[l]   = f(z[l])                     activation; f is the hidden
                                         activation, the output's for l = L
    Y        (n, 10)             one-hot targets

The cost of one example, C0, is cross-entropy ``-sum_j Y_j log a[L]_j`` or the
quadratic cost of the backprop explanation ``sum_j (a[L]_j - Y_j)^2``; the
batch cost C is the mean of C0 over the n rows.

Backpropagation is the chain rule applied from the output back.
``delta[l] = dC/dz[l]`` (n, fan_out) is the error of layer l::

    delta[L]   = dC/da[L] * f'(z[L])                 (output error)
               = (a[L] - Y) / n                     softmax + cross-entropy
               = 2 (a[L] - Y) * a[L](1 - a[L]) / n  sigmoid + quadratic cost
    delta[l-1] = (delta[l] @ W[l].T) * f'(z[l-1])   (each layer's error comes
                                                     from the next one's)
    dC/dW[l]   = a[l-1].T @ delta[l]                (n summed away by the
    dC/db[l]   = sum over rows of delta[l]           matrix product)

The ``/ n`` sits in delta[L], so the sums above are already the mini-batch
average that SGD follows. For one weight this is the explanation's
``dC0/dw = a(L-1) * f'(z(L)) * 2(a(L) - y)``.

Indexing differs from the math by one: Python lists are 0-based, so
``params.W[0]`` is W[1] and ``activations[0]`` is a[0] = X.

Each activation's derivative is written in terms of its *output* a (sigmoid'
= a(1-a), tanh' = 1-a^2, relu' = [a > 0]), so backprop needs only the stored
activations, not z.
"""

from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------------------
# Activations, each beside its derivative (micrograd's habit): name -> (f, f')
# fprime(a) takes the activation a = f(z), not z.

LEAKY_SLOPE = 0.01


def sigmoid(z):
    # 1 / (1 + exp(-z)) written as (1 + tanh(z / 2)) / 2: the same function, but
    # tanh never overflows, so no clipping is needed
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def sigmoid_prime(a):
    return a * (1.0 - a)


def tanh(z):
    return np.tanh(z)


def tanh_prime(a):
    return 1.0 - a * a


def relu(z):
    return np.maximum(z, 0.0)


def relu_prime(a):
    return (a > 0).astype(a.dtype)


def leaky_relu(z):
    return np.where(z > 0, z, LEAKY_SLOPE * z)


def leaky_relu_prime(a):
    return np.where(a > 0, 1.0, LEAKY_SLOPE).astype(a.dtype)


def softmax(z):
    # unchanged by subtracting a constant from a row: each row's max keeps exp from overflowing
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_prime),
    "tanh": (tanh, tanh_prime),
    "relu": (relu, relu_prime),
    "leaky_relu": (leaky_relu, leaky_relu_prime),
}
OUTPUTS = {"softmax": softmax, "sigmoid": sigmoid}


# ---------------------------------------------------------------------------
# Costs, each beside its derivative: name -> (C0, dC0/dz[L]). Both take the
# output activations A = a[L] (n, k), the targets Y (n, k) and the output's name.

_TINY = 1e-12  # keeps log() finite when a probability underflows to 0


def cross_entropy(A, Y, output):
    """C0 = -sum_j y_j log a_j for softmax (targets may be smoothed, not one-hot); for
    sigmoid outputs each unit is its own yes/no question: -sum_j [y log a + (1-y) log(1-a)]."""
    log_A = np.log(A + _TINY)
    if output == "softmax":
        return -(Y * log_A).sum(axis=1)
    return -(Y * log_A + (1 - Y) * np.log(1 - A + _TINY)).sum(axis=1)


def cross_entropy_delta(A, Y, output):
    """dC0/dz = a - y for both outputs: the output's derivative cancels the log's, so the
    gradient never vanishes however wrong the output is."""
    return A - Y


def mse(A, Y, output):
    """C0 = sum_j (a_j - y_j)^2, the quadratic cost of the backprop explanation."""
    return np.square(A - Y).sum(axis=1)


def mse_delta(A, Y, output):
    """dC0/dz = dC0/da * da/dz with dC0/da = 2 (a - y)."""
    dC_dA = 2.0 * (A - Y)
    if output == "sigmoid":
        return dC_dA * sigmoid_prime(A)
    # softmax Jacobian: da_j/dz_i = a_j (delta_ij - a_i), applied row by row
    return A * (dC_dA - np.sum(dC_dA * A, axis=1, keepdims=True))


LOSSES = {"cross_entropy": (cross_entropy, cross_entropy_delta), "mse": (mse, mse_delta)}


def example_costs(A, Y, output, loss):
    """C0 of every example: (n,) for A = a[L] (n, k) and targets Y (n, k)."""
    return LOSSES[loss][0](A, Y, output)


def cost(A, Y, output, loss):
    """C, the mean of C0 over the batch."""
    return float(np.mean(example_costs(A, Y, output, loss)))


def output_delta(A, Y, output, loss):
    """delta[L] = dC/dz[L] for the batch mean C: dC0/dz[L] / n, shape (n, k)."""
    return LOSSES[loss][1](A, Y, output) / len(A)


def one_hot(y, k=10, dtype=np.float32):
    """Y[i, y[i]] = 1, zeros elsewhere: (n, k)."""
    Y = np.zeros((len(y), k), dtype=dtype)
    Y[np.arange(len(y)), y] = 1
    return Y


# ---------------------------------------------------------------------------
# The network

@dataclass
class Spec:
    """What a network is, independent of its weights: enough to rebuild it."""

    sizes: list          # [784, hidden..., 10]
    activation: str = "relu"
    output: str = "softmax"
    loss: str = "cross_entropy"

    @property
    def n_params(self):
        return sum(m * n + n for m, n in zip(self.sizes[:-1], self.sizes[1:]))


def init_params(spec, rng, init="auto", dtype=np.float32):
    """Weights W (fan_in, fan_out) and biases b for every layer.

    he: N(0, 2/fan_in), keeps the variance of ReLU activations layer to layer;
    xavier: N(0, 1/fan_in) (LeCun/Glorot-style for sigmoid and tanh);
    normal: N(0, 1) for weights *and* biases, the classic of Nielsen's book.
    """
    if init == "auto":
        init = "he" if spec.activation in ("relu", "leaky_relu") else "xavier"
    Ws, bs = [], []
    for fan_in, fan_out in zip(spec.sizes[:-1], spec.sizes[1:]):
        if init == "normal":
            W = rng.standard_normal((fan_in, fan_out))
            b = rng.standard_normal(fan_out)
        else:
            scale = np.sqrt((2.0 if init == "he" else 1.0) / fan_in)
            W = rng.standard_normal((fan_in, fan_out)) * scale
            b = np.zeros(fan_out)
        Ws.append(W.astype(dtype))
        bs.append(b.astype(dtype))
    return Ws, bs


def forward(Ws, bs, X, spec, dropout=0.0, rng=None):
    """Feedforward. Returns the activations [a0 = X, a1, ..., aL] and the dropout masks.

    Dropout (inverted) zeroes each hidden unit with probability ``dropout`` and
    scales the survivors by 1/(1 - dropout), so nothing changes at test time.
    masks[l] is None when no dropout was applied to a[l+1], else the pair
    (mask, a before dropout): backprop needs f'(z) of the undropped activation.
    """
    f = ACTIVATIONS[spec.activation][0]
    activations, masks = [X], []
    a = X
    L = len(Ws)
    for l in range(L):
        z = a @ Ws[l] + bs[l]
        if l < L - 1:
            a = f(z)
            if dropout > 0:
                mask = dropout_mask(rng, a.shape, dropout, a.dtype)
                masks.append((mask, a))
                a = a * mask
            else:
                masks.append(None)
        else:
            a = OUTPUTS[spec.output](z)
        activations.append(a)
    return activations, masks


def dropout_mask(rng, shape, rate, dtype):
    """Inverted dropout: 0 with probability ``rate``, else 1 / (1 - rate), so that
    the expected activation is unchanged and nothing needs rescaling at test time."""
    keep = 1.0 - rate
    mask = (rng.random(shape, dtype=np.float32) < keep).astype(dtype)
    mask /= keep
    return mask


def backward(Ws, activations, masks, Y, spec):
    """Backward pass: dC/dW and dC/db for every layer, C the mean cost of the batch."""
    fprime = ACTIVATIONS[spec.activation][1]
    L = len(Ws)
    dWs, dbs = [None] * L, [None] * L
    delta = output_delta(activations[-1], Y, spec.output, spec.loss)
    for l in range(L - 1, -1, -1):
        dWs[l] = activations[l].T @ delta
        dbs[l] = delta.sum(axis=0)
        if l > 0:
            # error of the layer below: pull delta back through W, then through f
            delta = delta @ Ws[l].T
            a = activations[l]
            if masks[l - 1] is not None:
                mask, a = masks[l - 1]
                delta = delta * mask
            delta = delta * fprime(a)
    return dWs, dbs


def gradient_check(Ws, bs, X, Y, spec, eps=1e-5):
    """Compare backprop with central finite differences, parameter by parameter.

    Returns a list with, per layer, (max relative error of W, of b). The
    relative error is |g_bp - g_fd| / max(|g_bp| + |g_fd|, FLOOR). Use float64:
    a float64 cost differenced over 2*eps carries ~1e-11 of rounding error, so
    below FLOOR = 1e-4 the comparison turns absolute instead of amplifying it.
    """

    def C():
        acts, _ = forward(Ws, bs, X, spec)
        return cost(acts[-1], Y, spec.output, spec.loss)

    acts, masks = forward(Ws, bs, X, spec)
    dWs, dbs = backward(Ws, acts, masks, Y, spec)
    errors = []
    for l in range(len(Ws)):
        per = []
        for P, G in ((Ws[l], dWs[l]), (bs[l], dbs[l])):
            worst = 0.0
            for idx in np.ndindex(P.shape):
                old = P[idx]
                P[idx] = old + eps
                c_plus = C()
                P[idx] = old - eps
                c_minus = C()
                P[idx] = old
                g_fd = (c_plus - c_minus) / (2 * eps)
                g_bp = float(G[idx])
                denom = max(abs(g_bp) + abs(g_fd), 1e-4)
                worst = max(worst, abs(g_bp - g_fd) / denom)
            per.append(worst)
        errors.append(tuple(per))
    return errors
