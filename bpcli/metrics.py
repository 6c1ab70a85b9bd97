"""Scoring a model on labelled images: accuracy, cost, per-digit table, confusion matrix.

Images arrive as uint8 (n, 784) and are converted to float32 in [0, 1] one
batch at a time, so evaluating never holds a float copy of a whole split.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .budget import EVAL_BATCH  # (counted in the memory budget)
from .network import cost, forward, one_hot


def to_float(X_uint8, out=None):
    """uint8 pixels -> float32 in [0, 1], the network's input scale."""
    return np.multiply(X_uint8, np.float32(1 / 255), out=out, dtype=np.float32)


def predict(Ws, bs, spec, X, threads=1):
    """Output activations (n, k) float32 for images X (n, 784): uint8 pixels (converted
    one batch at a time) or floats already in [0, 1].

    threads > 1: that many batches of ``EVAL_BATCH`` rows at once (NumPy's products
    release the interpreter lock). Every batch is the same product wherever it runs,
    so the result is the same, bit for bit, on any number of threads.
    """
    P = np.empty((len(X), spec.sizes[-1]), dtype=np.float32)
    starts = range(0, len(X), EVAL_BATCH)

    def batch_at(i):
        batch = X[i:i + EVAL_BATCH]
        # (NumPy's error state is each thread's own)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # saturated (or NaN: callers check) outputs
            if batch.dtype == np.uint8:
                batch = to_float(batch)
            acts, _ = forward(Ws, bs, batch, spec)
            P[i:i + EVAL_BATCH] = acts[-1]

    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            for _ in pool.map(batch_at, starts):
                pass
    else:
        for i in starts:
            batch_at(i)
    return P


def loss_and_accuracy(Ws, bs, spec, X_uint8, y, threads=1):
    """Mean cost C and fraction correct on (X, y); (nan, nan) for an empty split.
    ``threads``: see ``predict``."""
    if len(y) == 0:
        return float("nan"), float("nan")
    P = predict(Ws, bs, spec, X_uint8, threads)
    C = cost(P, one_hot(y, P.shape[1]), spec.output, spec.loss)
    return C, float(np.mean(P.argmax(axis=1) == y))


def confusion_matrix(y_true, y_pred, k=10):
    """C[i, j] = number of examples of digit i predicted as j (rows true, columns predicted)."""
    return np.bincount(y_true.astype(np.int64) * k + y_pred, minlength=k * k).reshape(k, k)


def report(P, y, spec):
    """The evaluation document of docs/manual.md (without checkpoint/split), from probabilities."""
    k = P.shape[1]
    y_pred = P.argmax(axis=1)
    C = confusion_matrix(y, y_pred, k)
    support = C.sum(axis=1)
    correct = np.diag(C)
    predicted = C.sum(axis=0)
    per_digit = {}
    for d in range(k):
        per_digit[str(d)] = {
            "support": int(support[d]),
            "correct": int(correct[d]),
            "accuracy": float(correct[d] / support[d]) if support[d] else None,
            "precision": float(correct[d] / predicted[d]) if predicted[d] else None,
        }
    return {
        "n": int(len(y)),
        "accuracy": float(correct.sum() / len(y)) if len(y) else None,
        "loss": cost(P, one_hot(y, k), spec.output, spec.loss) if len(y) else None,
        "per_digit": per_digit,
        "confusion": C.tolist(),
    }


def most_confused(confusion, top=5):
    """[(true, predicted, count)] for the largest off-diagonal cells, largest first."""
    C = np.array(confusion)
    off = [(int(C[i, j]), i, j) for i in range(len(C)) for j in range(len(C)) if i != j and C[i, j]]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(i, j, n) for n, i, j in off[:top]]
