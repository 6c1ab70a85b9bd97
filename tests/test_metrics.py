"""Scoring on more than one thread: the same bits as on one."""

import threading

import numpy as np

from bpcli import metrics
from bpcli.budget import EVAL_BATCH
from bpcli.config import resolve
from bpcli.network import init_params
from bpcli.train import spec_of


def _model():
    spec = spec_of(resolve("default").recipe.model)
    Ws, bs = init_params(spec, np.random.default_rng(0))
    return Ws, bs, spec


def test_predict_on_threads_gives_the_bits_of_one_thread():
    Ws, bs, spec = _model()
    X = np.random.default_rng(1).integers(0, 256, (2 * EVAL_BATCH + 123, 784), dtype=np.uint8)
    one = metrics.predict(Ws, bs, spec, X)
    for threads in (2, 3, 8):
        assert metrics.predict(Ws, bs, spec, X, threads).tobytes() == one.tobytes()
    y = np.random.default_rng(2).integers(0, 10, len(X))
    assert metrics.loss_and_accuracy(Ws, bs, spec, X, y, 2) == metrics.loss_and_accuracy(Ws, bs, spec, X, y)


def test_predict_on_two_threads_runs_two_batches_at_once(monkeypatch):
    """Both threads are in the forward pass together (else two threads would be one)."""
    both = threading.Barrier(2, timeout=30)
    forward = metrics.forward
    calls = []

    def meeting_forward(*args, **kwargs):
        calls.append(threading.get_ident())
        if len(calls) <= 2:
            both.wait()  # raises BrokenBarrierError if the other batch never starts meanwhile
        return forward(*args, **kwargs)

    monkeypatch.setattr(metrics, "forward", meeting_forward)
    Ws, bs, spec = _model()
    X = np.zeros((2 * EVAL_BATCH, 784), np.uint8)
    metrics.predict(Ws, bs, spec, X, threads=2)
    assert len(set(calls[:2])) == 2
