"""Optimizers and learning-rate schedules."""

import math
from dataclasses import replace

import numpy as np
import pytest

from bpcli.config import Config
from bpcli.optim import SGD, Adam, cosine, learning_rate, step

TRAIN = Config().recipe.train  # the default recipe's train section


def quadratic_grad(w):
    return 2 * (w - 3.0)  # minimum at 3


@pytest.mark.parametrize("make", [
    lambda p: SGD(p),
    lambda p: SGD(p, momentum=0.9),
    lambda p: SGD(p, momentum=0.9, nesterov=True),
    lambda p: Adam(p),
])
def test_optimizers_find_the_minimum(make):
    w = np.array([0.0, 10.0])
    opt = make(w)
    for _ in range(500):
        opt.step(quadratic_grad(w), lr=0.05)
    np.testing.assert_allclose(w, [3.0, 3.0], atol=1e-3)


def test_momentum_by_hand():
    w = np.array([1.0])
    opt = SGD(w, momentum=0.5)
    opt.step(np.array([1.0]), lr=0.1)   # v = 1, w = 1 - 0.1
    opt.step(np.array([1.0]), lr=0.1)   # v = 0.5 + 1 = 1.5, w = 0.9 - 0.15
    np.testing.assert_allclose(w, [0.75])
    w2 = np.array([1.0])
    nes = SGD(w2, momentum=0.5, nesterov=True)
    nes.step(np.array([1.0]), lr=0.1)   # v = 1, w = 1 - 0.1 (1 + 0.5)
    np.testing.assert_allclose(w2, [0.85])


def test_weight_decay_only_on_the_first_n_decay():
    theta = np.array([2.0, 2.0])  # a weight, then a bias
    SGD(theta, weight_decay=0.5, n_decay=1).step(np.zeros(2), lr=1.0)
    assert theta.tolist() == [1.0, 2.0]


def test_adam_first_step_is_lr_sized():
    w = np.array([0.0])
    Adam(w).step(np.array([123.0]), lr=0.01)
    np.testing.assert_allclose(w, [-0.01], rtol=1e-6)


def test_state_round_trip_continues_identically():
    a, b = np.array([1.0, 2.0]), np.array([1.0, 2.0])
    opt_a = Adam(a, n_decay=1)
    for _ in range(3):
        opt_a.step(a * 0.3, lr=0.1)
    opt_b = Adam(b, n_decay=1)
    b[...] = a
    opt_b.load_state({k: v.copy() for k, v in opt_a.state().items()})
    opt_a.step(a * 0.3, lr=0.1)
    opt_b.step(b * 0.3, lr=0.1)
    np.testing.assert_array_equal(a, b)


def test_flush_subnormals():
    w = np.zeros(3, dtype=np.float32)
    opt = SGD(w, momentum=0.9)
    opt.v[...] = [1e-40, 1e-3, -1e-21]
    opt.flush_subnormals()
    np.testing.assert_array_equal(opt.v, np.array([0, 1e-3, 0], dtype=np.float32))


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.99])
def test_flush_runs_before_tiny_state_can_decay_into_subnormals(decay):
    from bpcli.optim import SMALLEST_NORMAL, TINY, steps_to_subnormal

    n = steps_to_subnormal(decay)
    assert TINY * decay**n >= SMALLEST_NORMAL > TINY * decay**(n + 1)
    assert steps_to_subnormal(0.9) == 391
    assert SGD(np.zeros(1), momentum=decay).flush_every == n
    assert SGD(np.zeros(1)).flush_every is None  # plain SGD keeps no state


def test_schedules():
    assert cosine(0.1, 0, 10) == 0.1
    assert math.isclose(cosine(0.1, 5, 10), 0.05)
    assert cosine(0.1, 10, 10) == 0.0
    assert step(1.0, 4.9, 20, step_size=5, gamma=0.5) == 1.0
    assert step(1.0, 5.0, 20, step_size=5, gamma=0.5) == 0.5
    assert step(1.0, 10.0, 20, step_size=5, gamma=0.5) == 0.25
    cfg = replace(TRAIN, schedule="constant", lr=0.3)
    assert learning_rate(cfg, 7.5) == 0.3
    lrs = [learning_rate(replace(TRAIN, warmup_epochs=0), e / 2) for e in range(30)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:]))  # cosine never goes up


def test_nesterov_with_weight_decay_by_hand():
    w = np.array([1.0, 2.0])
    SGD(w, momentum=0.9, nesterov=True, weight_decay=0.1).step(np.array([0.0, 0.5]), lr=0.1)
    # g = [0, 0.5] + 0.1 w = [0.1, 0.7]; v = g; the step is lr (g + 0.9 v) = 0.19 g
    np.testing.assert_allclose(w, [1.0 - 0.019, 2.0 - 0.133])


def test_warmup_grows_linearly_then_hands_over_to_the_schedule():
    from bpcli.optim import warmup

    cfg = replace(TRAIN, schedule="constant", lr=1.0, warmup_epochs=2.0)
    assert learning_rate(cfg, 0.0) < 0.01
    assert learning_rate(cfg, 1.0) == pytest.approx(0.5, abs=1e-3)
    assert learning_rate(cfg, 2.0) == 1.0 and learning_rate(cfg, 5.0) == 1.0
    assert warmup(0.5, 0.0) == 1.0  # off by default


def test_max_norm_caps_each_units_incoming_weights():
    from bpcli.optim import clip_max_norm

    W = np.array([[3.0, 0.1], [4.0, 0.1]], dtype=np.float32)  # column norms 5 and ~0.14
    clip_max_norm([W], 2.0)
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), [2.0, np.sqrt(0.02)], rtol=1e-6)
    np.testing.assert_allclose(W[:, 0], [1.2, 1.6], rtol=1e-6)  # direction kept
