"""Backprop is proven, not assumed: finite differences and a worked example by hand."""

import zlib

import numpy as np
import pytest

from bpcli.network import (ACTIVATIONS, LOSSES, OUTPUTS, Spec, backward, cost, forward,
                           gradient_check, init_params, one_hot, output_delta)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_backprop_matches_finite_differences(activation, output, loss, depth):
    # a seed of its own per case, the same in every process (str hashes are salted per process)
    rng = np.random.default_rng(zlib.crc32(f"{activation}-{output}-{loss}-{depth}".encode()))
    sizes = [5, *[4] * (depth - 1), 3]
    spec = Spec(sizes, activation, output, loss)
    Ws, bs = init_params(spec, rng, dtype=np.float64)
    bs = [b + 0.1 * rng.standard_normal(b.shape) for b in bs]  # exercise the bias path too
    X = rng.random((6, 5))
    Y = one_hot(rng.integers(0, 3, 6), 3, np.float64)
    errors = gradient_check(Ws, bs, X, Y, spec)
    assert len(errors) == depth
    assert max(max(e) for e in errors) < 1e-6, errors


def test_gradient_check_detects_a_wrong_gradient(monkeypatch):
    """The check itself can fail: break relu's derivative and it must notice."""
    import bpcli.network as network

    monkeypatch.setitem(network.ACTIVATIONS, "relu", (network.relu, lambda a: np.ones_like(a)))
    rng = np.random.default_rng(1)
    spec = Spec([4, 6, 3], "relu", "softmax", "cross_entropy")
    Ws, bs = init_params(spec, rng, dtype=np.float64)
    X = rng.standard_normal((8, 4))
    Y = one_hot(rng.integers(0, 3, 8), 3, np.float64)
    assert max(max(e) for e in gradient_check(Ws, bs, X, Y, spec)) > 1e-3


def test_worked_example_one_sgd_step_by_hand():
    # A 2-2-1 net, relu hidden, sigmoid output, quadratic cost C0 = (a - y)^2, one example.
    #   x = [1, 2], y = 1
    #   W1 = [[1, -1], [0, 1]], b1 = [0, -1.5]
    #   z1 = x @ W1 + b1 = [1 + 0, -1 + 2] + [0, -1.5] = [1, -0.5]
    #   a1 = relu(z1) = [1, 0]
    #   W2 = [[-0.5], [1]], b2 = [0.5]
    #   z2 = 1 * -0.5 + 0 * 1 + 0.5 = 0,   a2 = sigmoid(0) = 0.5
    #   C0 = (0.5 - 1)^2 = 0.25
    # Backward:
    #   delta2 = 2 (a2 - y) * sigmoid'(z2) = 2 (-0.5) (0.5 * 0.5) = -0.25
    #   dW2 = a1.T delta2 = [[-0.25], [0]],   db2 = [-0.25]
    #   delta1 = (delta2 W2.T) * relu'(z1) = [0.125, -0.25] * [1, 0] = [0.125, 0]
    #   dW1 = x.T delta1 = [[0.125, 0], [0.25, 0]],   db1 = [0.125, 0]
    # One SGD step with lr = 1, w <- w - lr dC/dw:
    #   W1 = [[0.875, -1], [-0.25, 1]],  b1 = [-0.125, -1.5]
    #   W2 = [[-0.25], [1]],             b2 = [0.75]
    spec = Spec([2, 2, 1], "relu", "sigmoid", "mse")
    Ws = [np.array([[1.0, -1.0], [0.0, 1.0]]), np.array([[-0.5], [1.0]])]
    bs = [np.array([0.0, -1.5]), np.array([0.5])]
    X, Y = np.array([[1.0, 2.0]]), np.array([[1.0]])

    acts, masks = forward(Ws, bs, X, spec)
    np.testing.assert_array_equal(acts[1], [[1.0, 0.0]])
    np.testing.assert_array_equal(acts[2], [[0.5]])
    assert cost(acts[2], Y, "sigmoid", "mse") == 0.25

    dWs, dbs = backward(Ws, acts, masks, Y, spec)
    np.testing.assert_array_equal(dWs[1], [[-0.25], [0.0]])
    np.testing.assert_array_equal(dbs[1], [-0.25])
    np.testing.assert_array_equal(dWs[0], [[0.125, 0.0], [0.25, 0.0]])
    np.testing.assert_array_equal(dbs[0], [0.125, 0.0])

    from bpcli.optim import SGD
    for p, g in zip([Ws[0], bs[0], Ws[1], bs[1]], [dWs[0], dbs[0], dWs[1], dbs[1]]):
        SGD(p).step(g, lr=1.0)
    np.testing.assert_array_equal(Ws[0], [[0.875, -1.0], [-0.25, 1.0]])
    np.testing.assert_array_equal(bs[0], [-0.125, -1.5])
    np.testing.assert_array_equal(Ws[1], [[-0.25], [1.0]])
    np.testing.assert_array_equal(bs[1], [0.75])
    # and the step went downhill
    assert cost(forward(Ws, bs, X, spec)[0][-1], Y, "sigmoid", "mse") < 0.25


def test_backprop_is_the_batch_mean_of_per_example_gradients():
    rng = np.random.default_rng(2)
    spec = Spec([5, 4, 3], "tanh", "softmax", "cross_entropy")
    Ws, bs = init_params(spec, rng, dtype=np.float64)
    X = rng.random((7, 5))
    Y = one_hot(rng.integers(0, 3, 7), 3, np.float64)
    acts, masks = forward(Ws, bs, X, spec)
    dWs, _ = backward(Ws, acts, masks, Y, spec)
    per_example = []
    for i in range(7):
        a, m = forward(Ws, bs, X[i:i + 1], spec)
        per_example.append(backward(Ws, a, m, Y[i:i + 1], spec)[0][0])
    np.testing.assert_allclose(dWs[0], np.mean(per_example, axis=0), rtol=1e-12)


def test_dropout_gradient_matches_finite_differences_for_a_fixed_mask():
    """With the mask held fixed, dropout is a linear layer: backprop must match it."""
    rng = np.random.default_rng(3)
    spec = Spec([5, 6, 6, 3], "sigmoid", "softmax", "cross_entropy")
    Ws, bs = init_params(spec, rng, dtype=np.float64)
    X = rng.random((4, 5))
    Y = one_hot(rng.integers(0, 3, 4), 3, np.float64)

    def C():
        acts, _ = forward(Ws, bs, X, spec, dropout=0.5, rng=np.random.default_rng(9))
        return cost(acts[-1], Y, "softmax", "cross_entropy")

    acts, masks = forward(Ws, bs, X, spec, dropout=0.5, rng=np.random.default_rng(9))
    dWs, _ = backward(Ws, acts, masks, Y, spec)
    eps = 1e-6
    for idx in [(0, 0), (2, 3), (4, 5)]:
        old = Ws[0][idx]
        Ws[0][idx] = old + eps
        up = C()
        Ws[0][idx] = old - eps
        down = C()
        Ws[0][idx] = old
        assert abs((up - down) / (2 * eps) - dWs[0][idx]) < 1e-7


def test_inverted_dropout_keeps_the_expected_activation():
    rng = np.random.default_rng(4)
    spec = Spec([10, 1000, 2], "relu", "softmax", "cross_entropy")
    Ws, bs = init_params(spec, rng)
    X = rng.random((50, 10)).astype(np.float32)
    plain = forward(Ws, bs, X, spec)[0][1]
    dropped = forward(Ws, bs, X, spec, dropout=0.5, rng=rng)[0][1]
    alive = plain > 0
    assert 0.45 < np.mean(dropped[alive] == 0) < 0.55  # half of the live units dropped
    assert abs(dropped.mean() / plain.mean() - 1) < 0.05


def test_softmax_and_sigmoid_are_stable_for_huge_inputs():
    spec = Spec([2, 3], "relu", "softmax", "cross_entropy")
    Ws = [np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)]
    bs = [np.zeros(3, dtype=np.float32)]
    P = forward(Ws, bs, np.array([[1.0, 0.0]], dtype=np.float32), spec)[0][-1]
    assert np.all(np.isfinite(P)) and abs(P.sum() - 1) < 1e-6
    spec = Spec([2, 3], "sigmoid", "sigmoid", "mse")
    A = forward(Ws, bs, np.array([[1.0, 0.0]], dtype=np.float32), spec)[0][-1]
    assert np.all(np.isfinite(A))


@pytest.mark.parametrize("init,activation", [("he", "relu"), ("xavier", "tanh"), ("normal", "sigmoid")])
def test_init_scales(init, activation):
    spec = Spec([784, 500, 10], activation)
    Ws, bs = init_params(spec, np.random.default_rng(0), init)
    expected = {"he": np.sqrt(2 / 784), "xavier": np.sqrt(1 / 784), "normal": 1.0}[init]
    assert abs(Ws[0].std() / expected - 1) < 0.02
    assert Ws[0].shape == (784, 500) and Ws[0].dtype == np.float32
    assert (bs[0].std() > 0.9) == (init == "normal")


def test_seed_networks_parameter_count():
    assert Spec([784, 16, 16, 10]).n_params == 13_002


def test_cross_entropy_with_smoothed_targets_by_hand():
    # C0 = -sum_j y_j log a_j; with a = [0.5, 0.25, 0.25] and y = [0.8, 0.1, 0.1]:
    # -(0.8 ln 0.5 + 0.2 ln 0.25) = 0.8 ln 2 + 0.2 ln 4 = 1.2 ln 2
    A = np.array([[0.5, 0.25, 0.25]])
    Y = np.array([[0.8, 0.1, 0.1]])
    assert cost(A, Y, "softmax", "cross_entropy") == pytest.approx(1.2 * np.log(2), rel=1e-9)


def test_the_reference_never_writes_into_its_inputs():
    """network.py reads like the equations: every function returns a new array."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, (4, 10)).astype(np.float32)
    Y = one_hot(np.array([1, 2, 3, 4]))
    for f, fprime in ACTIVATIONS.values():
        kept = z.copy()
        a = f(z)
        fprime(a)
        np.testing.assert_array_equal(z, kept)
    for output in OUTPUTS:
        A = OUTPUTS[output](z)
        np.testing.assert_array_equal(z, kept)
        for loss in LOSSES:
            A_kept = A.copy()
            output_delta(A, Y, output, loss)
            cost(A, Y, output, loss)
            np.testing.assert_array_equal(A, A_kept)
