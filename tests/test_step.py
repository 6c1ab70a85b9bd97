"""The training step (bpcli.step) and its BLAS calls (bpcli.blas), held to the reference:
network.forward + network.backward + the optimizer's own step."""

import itertools

import numpy as np
import pytest

from bpcli import blas
from bpcli.network import ACTIVATIONS, Spec, backward, forward, init_params, one_hot, param_views
from bpcli.optim import SGD, Adam
from bpcli.step import Step

SIZES = [20, 7, 5, 10]
K = 16            # inputs 16..19 are blank in every example
BATCH = 6

needs_blas = pytest.mark.skipif(not blas.available(),
                                reason="NumPy's BLAS cannot be called directly here (not an ILP64 OpenBLAS)")

OPTIMIZERS = {
    "sgd": lambda theta, nw: SGD(theta, n_decay=nw),
    "sgd+decay": lambda theta, nw: SGD(theta, weight_decay=0.05, n_decay=nw),
    "momentum": lambda theta, nw: SGD(theta, momentum=0.9, n_decay=nw),
    "momentum+decay": lambda theta, nw: SGD(theta, momentum=0.9, weight_decay=0.05, n_decay=nw),
    "nesterov+decay": lambda theta, nw: SGD(theta, momentum=0.9, nesterov=True, weight_decay=0.05, n_decay=nw),
    "adam": lambda theta, nw: Adam(theta, weight_decay=0.05, n_decay=nw),
}
PAIRS = [("softmax", "cross_entropy"), ("sigmoid", "mse"), ("softmax", "mse"), ("sigmoid", "cross_entropy")]


def flat(spec, Ws, bs):
    return np.concatenate([W.ravel() for W in Ws] + list(bs))


def batches(seed=0):
    """Two batches of pixels (full, then short) with blank inputs K.., and their labels."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (BATCH, BATCH - 2):
        pixels = rng.integers(0, 256, (n, SIZES[0]), dtype=np.uint8)
        pixels[:, K:] = 0
        out.append((pixels, rng.integers(0, 10, n)))
    return out


def train_both(spec, optimizer, dropout=0.0, lr=0.3):
    """Two steps by Step and by the reference from the same start; returns both theta."""
    Ws, bs = init_params(spec, np.random.default_rng(1))
    theta = flat(spec, Ws, bs)
    reference = theta.copy()
    nw = sum(W.size for W in Ws)
    opt, ref_opt = OPTIMIZERS[optimizer](theta, nw), OPTIMIZERS[optimizer](reference, nw)
    step = Step(spec, theta, opt, BATCH, K, dropout, np.random.default_rng(2))
    ref_rng = np.random.default_rng(2)
    ref_Ws, ref_bs = param_views(reference, spec.sizes)
    for pixels, y in batches():
        Y = one_hot(y)
        A = step.forward(pixels[:, :K])
        step.backward(Y, lr)
        acts, masks = forward(ref_Ws, ref_bs, pixels.astype(np.float32) / 255, spec, dropout, ref_rng)
        np.testing.assert_allclose(A, acts[-1], rtol=1e-5, atol=1e-6)
        dWs, dbs = backward(ref_Ws, acts, masks, Y, spec)
        ref_opt.step(flat(spec, dWs, dbs), lr)
    return theta, reference


@pytest.fixture(params=["blas", "numpy"])
def path(request, monkeypatch):
    """Run each test through the direct BLAS calls and through the NumPy fallback."""
    if request.param == "blas":
        if not blas.available():
            pytest.skip("NumPy's BLAS cannot be called directly here (not an ILP64 OpenBLAS)")
    else:
        monkeypatch.setattr(blas, "available", lambda: False)
    return request.param


@pytest.mark.parametrize("activation,pair", list(itertools.product(ACTIVATIONS, PAIRS)))
def test_step_equals_reference_for_every_activation_output_and_cost(path, activation, pair):
    spec = Spec(SIZES, activation, *pair)
    theta, reference = train_both(spec, "momentum+decay")
    np.testing.assert_allclose(theta, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_step_equals_reference_for_every_optimizer(path, optimizer):
    theta, reference = train_both(Spec(SIZES, "relu"), optimizer)
    np.testing.assert_allclose(theta, reference, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(theta, flat(Spec(SIZES), *init_params(Spec(SIZES), np.random.default_rng(1))))


def test_step_with_dropout_equals_reference(path):
    theta, reference = train_both(Spec(SIZES, "relu"), "momentum", dropout=0.4)
    np.testing.assert_allclose(theta, reference, rtol=1e-5, atol=1e-6)


def test_blank_inputs_weights_change_only_by_decay(path):
    spec = Spec(SIZES, "relu")
    theta, _ = train_both(spec, "sgd+decay", lr=0.3)
    start = flat(spec, *init_params(spec, np.random.default_rng(1)))
    blank = slice(K * SIZES[1], SIZES[0] * SIZES[1])
    # two plain SGD steps on zero gradient: w (1 - lr * weight_decay)^2
    np.testing.assert_allclose(theta[blank], start[blank] * (1 - 0.3 * 0.05) ** 2, rtol=1e-6)


def test_fused_sgd_is_used_where_it_can_be(monkeypatch):
    theta = np.zeros(Spec(SIZES).n_params, np.float32)
    for optimizer, fused in [("sgd", True), ("momentum+decay", True), ("nesterov+decay", False), ("adam", False)]:
        step = Step(Spec(SIZES), theta, OPTIMIZERS[optimizer](theta, 10), BATCH, K)
        assert step.fused == (fused and blas.available())
    monkeypatch.setattr(blas, "available", lambda: False)
    assert not Step(Spec(SIZES), theta, OPTIMIZERS["sgd"](theta, 10), BATCH, K).fused


# ---------------------------------------------------------------------------
# blas.Product and blas.Axpy against NumPy

@needs_blas
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
def test_product_computes_alpha_a_b_plus_beta_c(trans_a, trans_b):
    rng = np.random.default_rng(0)
    a = rng.random((5, 3) if trans_a else (3, 5), dtype=np.float32)
    b = rng.random((4, 5) if trans_b else (5, 4), dtype=np.float32)
    c = rng.random((3, 4), dtype=np.float32)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    expected = 0.5 * op_a @ op_b - 2.0 * c
    blas.Product(a, b, c, trans_a, trans_b, batch="k")(5, alpha=0.5, beta=-2.0)
    np.testing.assert_allclose(c, expected, rtol=1e-5)


@needs_blas
def test_product_on_a_short_batch_touches_only_its_rows():
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 5), dtype=np.float32), rng.random((5, 4), dtype=np.float32)
    c = np.full((6, 4), 7.0, dtype=np.float32)
    blas.Product(a, b, c)(2)  # batch "m": the first 2 rows of a and c
    np.testing.assert_allclose(c[:2], a[:2] @ b, rtol=1e-5)
    assert (c[2:] == 7.0).all()
    g = np.zeros((5, 4), np.float32)
    blas.Product(a, c, g, trans_a=True, batch="k")(2)  # a[:2].T @ c[:2]
    np.testing.assert_allclose(g, a[:2].T @ c[:2], rtol=1e-5)


@needs_blas
def test_product_of_single_rows_and_views():
    # a single row reports a stride of 0: BLAS must still get its length
    ones, delta = np.ones((1, 3), np.float32), np.arange(12, dtype=np.float32).reshape(3, 4)
    target = np.zeros(10, np.float32)
    blas.Product(ones, delta, target[2:6][None, :], batch="k")(3)
    np.testing.assert_array_equal(target, [0, 0, 12, 15, 18, 21, 0, 0, 0, 0])


@needs_blas
def test_product_and_axpy_refuse_what_they_cannot_multiply():
    f32 = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError):
        blas.Product(f32, f32, f32)                       # (3, 4) @ (3, 4)
    with pytest.raises(ValueError):
        blas.Product(f32.astype(np.float64), f32.T.copy(), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError):
        blas.Product(f32[:, ::2], np.zeros((2, 3), np.float32), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError):
        blas.Axpy(np.zeros(3, np.float32), np.zeros(4, np.float32))


@needs_blas
def test_axpy():
    x, y = np.arange(5, dtype=np.float32), np.ones(5, np.float32)
    blas.Axpy(x, y)(-0.5)
    np.testing.assert_array_equal(y, 1 - 0.5 * np.arange(5, dtype=np.float32))


def test_direct_blas_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("BP_DIRECT_BLAS", "0")
    monkeypatch.setattr(blas, "_checked", False)
    monkeypatch.setattr(blas, "_lib", None)
    assert not blas.available()


@needs_blas
@pytest.mark.parametrize("optimizer", [k for k in OPTIMIZERS if k != "adam"])
def test_sgd_by_axpy_equals_sgd_by_numpy(optimizer, monkeypatch):
    rng = np.random.default_rng(0)
    start, grads = rng.standard_normal(40).astype(np.float32), rng.standard_normal((3, 40)).astype(np.float32)
    results = []
    for direct in (True, False):
        if not direct:
            monkeypatch.setattr(blas, "available", lambda: False)
        theta = start.copy()
        opt = OPTIMIZERS[optimizer](theta, 30)
        for g in grads:
            opt.step(g.copy(), lr=0.1)
        results.append(theta)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-7)
    assert not np.array_equal(results[0], start)
