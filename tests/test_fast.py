"""The training engine (bpcli.fast) and its BLAS calls, held to the reference:
network.forward + network.backward + the plain optimizers of bpcli.optim,
for every activation x output x cost x optimizer x thread count."""

import itertools
import os
import signal

import numpy as np
import pytest

from bpcli.fast import Engine, blas
from bpcli.fast import engine as engine_module
from bpcli.fast.core import FusedCore
from bpcli.fast.fused import Update
from bpcli.fast.parallel import sharding
from bpcli.fast.parallel.placement import ShardPlacement, worker_modes
from bpcli.network import ACTIVATIONS, Spec, init_params, one_hot
from bpcli.optim import SGD, Adam
from bpcli.reference import ReferenceEngine

SIZES = [20, 7, 5, 10]
K = 16            # inputs 16..19 are blank in every example
BATCH = 6
INKED = np.arange(SIZES[0]) < K

OPTIMIZERS = {
    "sgd": lambda theta, nw: SGD(theta, n_decay=nw),
    "sgd+decay": lambda theta, nw: SGD(theta, weight_decay=0.05, n_decay=nw),
    "momentum": lambda theta, nw: SGD(theta, momentum=0.9, n_decay=nw),
    "momentum+decay": lambda theta, nw: SGD(theta, momentum=0.9, weight_decay=0.05, n_decay=nw),
    "nesterov+decay": lambda theta, nw: SGD(theta, momentum=0.9, nesterov=True, weight_decay=0.05, n_decay=nw),
    "adam": lambda theta, nw: Adam(theta, weight_decay=0.05, n_decay=nw),
}
PAIRS = [("softmax", "cross_entropy"), ("sigmoid", "mse"), ("softmax", "mse"), ("sigmoid", "cross_entropy")]


def flat(Ws, bs):
    return np.concatenate([W.ravel() for W in Ws] + list(bs))


def views(theta, sizes):
    from bpcli.fast.layout import param_views

    return param_views(theta, sizes)


def batches(batch=BATCH, sizes=(BATCH, BATCH, BATCH - 2), seed=0):
    """Batches of pixels (full ones, then a short one) with blank inputs K.., and their labels."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        pixels = rng.integers(0, 256, (n, SIZES[0]), dtype=np.uint8)
        pixels[:, K:] = 0
        out.append((pixels, rng.integers(0, 10, n)))
    return out


def train_both(spec, optimizer, threads=1, dropout=0.0, lr=0.3, batch=BATCH, sizes=None, max_norm=0.0):
    """Steps by the fast engine and by the reference engine (network.py + optim.py) from the
    same start; returns both parameter vectors in model order (all weights, then all biases)."""
    Ws, bs = init_params(spec, np.random.default_rng(1))
    fast_engine, reference = (make(spec, Ws, bs, OPTIMIZERS[optimizer], batch, INKED, threads=threads, dropout=dropout,
                                   max_norm=max_norm, rng=np.random.default_rng(2))
                              for make in (Engine, ReferenceEngine))
    try:
        for pixels, y in batches(batch, sizes or (batch, batch, batch - 2)):
            Y = one_hot(y)
            A = fast_engine.train_batch(fast_engine.inputs_of(pixels), Y, lr).copy()
            np.testing.assert_allclose(A, reference.train_batch(pixels, Y, lr), rtol=1e-5, atol=1e-6)
        return flat(*fast_engine.params()), flat(*reference.params())
    finally:
        fast_engine.close()


def use_path(monkeypatch, name):
    """Make bpcli.fast.blas use one path (what BP_BLAS=name chooses), or skip if it cannot."""
    if name == "numpy":
        gemm = axpy = None
    else:
        found = blas._bind_ctypes() if name == "ctypes" else blas._bind_scipy()
        if isinstance(found, str):
            pytest.skip(f"the {name} BLAS path is not available here: {found}")
        gemm, axpy = found
    for attr, value in (("_path", None if name == "numpy" else name), ("_gemm", gemm), ("_axpy", axpy),
                        ("_why", "chosen by the test")):
        monkeypatch.setattr(blas, attr, value)


@pytest.fixture(params=["ctypes", "scipy", "numpy"])
def path(request, monkeypatch):
    """Run each test through both direct BLAS paths and through the NumPy fallback."""
    use_path(monkeypatch, request.param)
    return request.param


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("activation,pair", list(itertools.product(ACTIVATIONS, PAIRS)))
def test_engine_equals_reference_for_every_activation_output_and_cost(path, activation, pair, threads):
    spec = Spec(SIZES, activation, *pair)
    theta, reference = train_both(spec, "momentum+decay", threads)
    np.testing.assert_allclose(theta, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parts", ["one part", "parts on the workers"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_engine_equals_reference_for_every_optimizer(path, optimizer, threads, parts, monkeypatch):
    if parts == "parts on the workers":  # as for a large network: the update split over the threads
        monkeypatch.setattr(sharding, "PARALLEL_UPDATE_FROM", 0)
    theta, reference = train_both(Spec(SIZES, "relu"), optimizer, threads)
    np.testing.assert_allclose(theta, reference, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(theta, flat(*init_params(Spec(SIZES), np.random.default_rng(1))))


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_with_dropout_and_max_norm_equals_reference(path, threads):
    theta, reference = train_both(Spec(SIZES, "relu"), "momentum", threads, dropout=0.4, max_norm=1.0)
    np.testing.assert_allclose(theta, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd+decay", "momentum+decay", "nesterov+decay"])
def test_odd_shards_and_empty_shards_equal_reference(path, optimizer):
    """A batch of 10 over 3 threads (6 shards of 1 or 2 rows), then batches of 7 and 2: the
    last leaves four shards with nothing to do."""
    theta, reference = train_both(Spec(SIZES, "tanh"), optimizer, threads=3, batch=10, sizes=(10, 7, 2))
    np.testing.assert_allclose(theta, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_blank_inputs_weights_change_only_by_decay(path, threads):
    spec = Spec(SIZES, "relu")
    theta, _ = train_both(spec, "sgd+decay", threads, lr=0.3)
    start = flat(*init_params(spec, np.random.default_rng(1)))
    blank = np.zeros((SIZES[0], SIZES[1]), bool)
    blank[K:] = True
    blank = np.flatnonzero(blank.ravel())
    # three plain SGD steps on zero gradient: w (1 - lr * weight_decay)^3
    np.testing.assert_allclose(theta[blank], start[blank] * (1 - 0.3 * 0.05) ** 3, rtol=1e-6)


@pytest.mark.parametrize("update_from", [sharding.PARALLEL_UPDATE_FROM, 0])
def test_same_threads_same_bits_whatever_the_scheduling(update_from, monkeypatch):
    """Two engines on 2 threads give identical weights (the reduction order is fixed),
    with the update on the caller or in parts on the workers."""
    monkeypatch.setattr(sharding, "PARALLEL_UPDATE_FROM", update_from)
    spec = Spec(SIZES, "relu")
    results = [train_both(spec, "nesterov+decay", threads=2, dropout=0.2)[0] for _ in range(3)]
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_state_and_params_round_trip_in_model_order():
    spec = Spec(SIZES, "relu")
    Ws, bs = init_params(spec, np.random.default_rng(1))
    inked = np.zeros(SIZES[0], bool)
    inked[[3, 0, 19, 7, 11]] = True  # an order that is not a prefix
    engine = Engine(spec, Ws, bs, OPTIMIZERS["momentum"], BATCH, inked)
    got_Ws, got_bs = engine.params()
    for a, b in zip(got_Ws + list(got_bs), Ws + bs):
        np.testing.assert_array_equal(a, b)
    state = {"v0": np.arange(spec.n_params - sum(SIZES[1:]), dtype=np.float32),
             "v1": np.ones(sum(SIZES[1:]), np.float32)}
    engine.load(Ws, bs, state)
    for key, value in engine.state().items():
        np.testing.assert_array_equal(value, state[key])


def test_a_batch_larger_than_prepared_is_refused():
    spec = Spec(SIZES)
    engine = Engine(spec, *init_params(spec, np.random.default_rng(1)), OPTIMIZERS["sgd"], BATCH, INKED)
    with pytest.raises(ValueError):
        engine.train_batch(np.zeros((BATCH + 1, K), np.uint8), np.zeros((BATCH + 1, 10), np.float32), 0.1)


def test_fused_update_is_used_where_it_can_be():
    theta = np.zeros(Spec(SIZES).n_params, np.float32)
    for optimizer, threads, fused in [("sgd", 1, True), ("sgd", 2, False), ("momentum+decay", 1, True),
                                      ("momentum+decay", 2, True), ("nesterov+decay", 1, False), ("adam", 1, False)]:
        update = Update(OPTIMIZERS[optimizer](theta, 10), threads)
        assert (update.grad is None) == fused, (optimizer, threads)
        assert len(update.shard_targets) == threads


def test_a_shard_needs_enough_work_to_get_a_thread(monkeypatch):
    monkeypatch.setattr(sharding, "SHARD_MIN_MACS", 1 << 23)  # the real rule (conftest lowers it)
    seed_net, net_a, default_net = [784, 16, 16, 10], [784, 128, 64, 10], [784, 512, 256, 10]
    assert sharding.macs_per_example([2, 3, 4]) == 2 * 6 + 3 * 12  # the input's error is never computed
    assert sharding.shards_for(2, 10, seed_net) == 1          # batch-10 learning: one shard, no workers
    assert sharding.shards_for(2, 128, net_a) == 2
    assert sharding.shards_for(8, 128, net_a) == 3            # no more than the work is worth
    assert sharding.shards_for(2, 256, default_net) == 2
    assert sharding.shards_for(1, 256, default_net) == 1
    assert sharding.shards_for(4, 3, [784, 4096, 4096, 10]) == 3  # never more shards than rows
    engine = Engine(Spec(seed_net), *init_params(Spec(seed_net), np.random.default_rng(0)), OPTIMIZERS["sgd"],
                    10, np.ones(784, bool), threads=2)
    try:
        assert engine.shard_count == 1 and engine.worker_threads is None
    finally:
        engine.close()


def test_update_parts_cover_the_vector_on_cache_line_boundaries():
    from bpcli.fast.fused import ALIGN

    for n, parts in [(1000, 4), (10, 6), (4096, 2), (33, 1)]:
        theta = np.zeros(n, np.float32)
        update = Update(OPTIMIZERS["nesterov+decay"](theta, n // 2), shards=2, parts=parts)
        spans = [(p["sum"].__array_interface__["data"][0] - update.target.__array_interface__["data"][0]) // 4
                 for p in update.parts]
        sizes = [len(p["sum"]) for p in update.parts]
        assert spans[0] == 0 and sum(sizes) == n and all(size > 0 for size in sizes)
        assert [a + b for a, b in zip(spans, sizes)][:-1] == spans[1:]  # contiguous, in order
        assert all(start % ALIGN == 0 for start in spans)
        assert len(update.parts) <= parts


# ---------------------------------------------------------------------------
# Where the shards run: the same bits everywhere

def test_the_fused_core_alone_trains_the_bits_of_the_engine_on_worker_processes(monkeypatch):
    """FusedCore, the engine without its parallel layer, cut into the shards and update parts
    of 2 threads, trains on one thread the weights the engine trains on worker processes."""
    monkeypatch.setattr(sharding, "PARALLEL_UPDATE_FROM", 0)  # the update's parts on the workers too
    monkeypatch.setattr(ShardPlacement, "choose", lambda self: "processes")
    spec = Spec(SIZES, "relu")
    on_workers = train_both(spec, "nesterov+decay", threads=2, dropout=0.3)[0]
    Ws, bs = init_params(spec, np.random.default_rng(1))
    core = FusedCore(spec, Ws, bs, OPTIMIZERS["nesterov+decay"], BATCH, INKED, shards=2,
                     parts=sharding.parts_for(2, spec.n_params), dropout=0.3, rng=np.random.default_rng(2))
    for pixels, y in batches():
        core.train_batch(core.inputs_of(pixels), one_hot(y), 0.3)
    np.testing.assert_array_equal(flat(*core.params()), on_workers)


@pytest.mark.parametrize("mode", ["threads", "serial"])
def test_every_mode_gives_the_bits_of_worker_processes(monkeypatch, mode):
    monkeypatch.setattr(sharding, "PARALLEL_UPDATE_FROM", 0)  # the update's parts too
    monkeypatch.setenv("BP_WORKERS", "")
    spec = Spec(SIZES, "relu")
    monkeypatch.setattr(ShardPlacement, "choose", lambda self: "processes")
    first = train_both(spec, "nesterov+decay", threads=2, dropout=0.3)[0]
    monkeypatch.setattr(ShardPlacement, "choose", lambda self: mode)
    second = train_both(spec, "nesterov+decay", threads=2, dropout=0.3)[0]
    np.testing.assert_array_equal(first, second)


def test_bp_workers_serial_runs_every_shard_on_the_caller_with_the_bits_of_workers(monkeypatch):
    """BP_WORKERS=serial: N threads' shards one after another on the caller, nothing forked
    or started, and the weights of N threads on workers, bit for bit."""
    spec, choose = Spec(SIZES, "relu"), ShardPlacement.choose
    monkeypatch.setenv("BP_WORKERS", "processes")
    monkeypatch.setattr(ShardPlacement, "choose", lambda self: "processes")
    first = train_both(spec, "nesterov+decay", threads=2)[0]
    monkeypatch.setattr(ShardPlacement, "choose", choose)
    monkeypatch.setenv("BP_WORKERS", "serial")
    assert worker_modes() == ["serial"]
    started = []
    monkeypatch.setattr(engine_module, "WorkerProcesses", lambda *args: started.append("processes"))
    monkeypatch.setattr(engine_module, "WorkerThreads", lambda *args: started.append("threads"))
    second = train_both(spec, "nesterov+decay", threads=2)[0]
    assert started == []
    np.testing.assert_array_equal(first, second)


def test_shards_are_independent_of_which_thread_runs_them(monkeypatch):
    """The engine's result is fixed by the shard count: worker threads that run every
    shard on one thread in reverse order give the same bits as the real ones."""
    monkeypatch.setattr(ShardPlacement, "choose", lambda self: "threads")
    spec = Spec(SIZES, "relu")
    first = train_both(spec, "momentum+decay", threads=2)[0]

    class Reversed:
        def __init__(self, workers):
            pass

        def run(self, tasks, meanwhile=None):
            for task in reversed(tasks):
                if task is not None:
                    task()
            if meanwhile is not None:
                meanwhile()

        def close(self):
            pass

    real = engine_module.WorkerThreads
    engine_module.WorkerThreads = Reversed
    try:
        second = train_both(spec, "momentum+decay", threads=2)[0]
    finally:
        engine_module.WorkerThreads = real
    np.testing.assert_array_equal(first, second)


def engine_for(threads=2, batch=BATCH):
    spec = Spec(SIZES, "relu")
    Ws, bs = init_params(spec, np.random.default_rng(1))
    return Engine(spec, Ws, bs, OPTIMIZERS["momentum"], batch, INKED, threads=threads)


def test_without_worker_processes_the_engine_goes_on_with_the_same_bits(monkeypatch):
    """Forking can fail (a process limit): the engine leaves processes out and trains on."""
    spec = Spec(SIZES, "relu")
    first = train_both(spec, "momentum+decay", threads=2)[0]

    def cannot_fork(*args):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(engine_module, "WorkerProcesses", cannot_fork)
    engine = engine_for()
    try:
        for pixels, y in batches():
            engine.train_batch(engine.inputs_of(pixels), one_hot(y), 0.3)
        assert "processes" not in engine.placement.modes and not engine.worker_processes
        assert sum(engine.placement.counts.values()) == 3
    finally:
        engine.close()
    second = train_both(spec, "momentum+decay", threads=2)[0]
    np.testing.assert_array_equal(first, second)


def test_jobs_are_registered_before_the_first_step_and_run_on_the_workers():
    engine = engine_for()
    try:
        seen = engine.buffer((4,), np.int64)
        seen[:] = 0
        job = engine.register(lambda a, b, c: seen.__setitem__(a, os.getpid() + b + c))
        parts = [(job, 0, 1, 2), (job, 1, 0, 0)]  # the first runs here, the second on a worker
        pixels, y = batches()[0]
        engine.train_batch(engine.inputs_of(pixels), one_hot(y), 0.3, meanwhile=lambda: parts)
        assert seen[0] == os.getpid() + 3 and seen[1] not in (0, os.getpid())
        with pytest.raises(RuntimeError, match="before the first step"):
            engine.register(lambda a, b, c: None)
    finally:
        engine.close()


def test_workers_read_a_batch_in_an_engine_buffer_where_it_is():
    engine = engine_for()
    try:
        pixels, y = batches()[0]
        X = engine.inputs_of(pixels)
        held = engine.buffer((BATCH, X.shape[1]), np.uint8)
        np.copyto(held, X)
        assert engine._source(held[:4]) == 0 and engine._source(X) is None
        assert engine._source(held[1:]) is None  # not its first rows
        a = engine.train_batch(held, one_hot(y), 0.3).copy()
    finally:
        engine.close()
    reference = engine_for()
    try:
        np.testing.assert_array_equal(a, reference.train_batch(X, one_hot(y), 0.3))
        np.testing.assert_array_equal(engine.theta, reference.theta)
    finally:
        reference.close()


# ---------------------------------------------------------------------------
# blas.Product and blas.Axpy against NumPy, on both paths

@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
def test_product_computes_alpha_a_b_plus_beta_c(path, trans_a, trans_b):
    rng = np.random.default_rng(0)
    a = rng.random((5, 3) if trans_a else (3, 5), dtype=np.float32)
    b = rng.random((4, 5) if trans_b else (5, 4), dtype=np.float32)
    c = rng.random((3, 4), dtype=np.float32)
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)
    expected = 0.5 * op_a @ op_b - 2.0 * c
    blas.Product(a, b, c, trans_a, trans_b, batch="k")(5, alpha=0.5, beta=-2.0)
    np.testing.assert_allclose(c, expected, rtol=1e-5)


def test_small_products_keep_the_gil_and_large_ones_release_it(monkeypatch):
    """On the ctypes path a product below blas.HOLD_GIL_BELOW multiply-adds is called
    through PyDLL (the GIL kept), a larger one through CDLL; both compute the same."""
    use_path(monkeypatch, "ctypes")
    rng = np.random.default_rng(0)
    for m, k, n in [(4, 5, 3), (64, 128, 64)]:
        a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
        c = np.zeros((m, n), np.float32)
        product = blas.Product(a, b, c)
        held = m * k * n < blas.HOLD_GIL_BELOW
        assert product.gemm is blas._gemm[1 if held else 0], (m, k, n)
        product(m)
        np.testing.assert_allclose(c, a @ b, rtol=1e-5)
    assert (4 * 5 * 3 < blas.HOLD_GIL_BELOW) and (64 * 128 * 64 >= blas.HOLD_GIL_BELOW)


def test_product_on_a_short_batch_touches_only_its_rows(path):
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 5), dtype=np.float32), rng.random((5, 4), dtype=np.float32)
    c = np.full((6, 4), 7.0, dtype=np.float32)
    blas.Product(a, b, c)(2)  # batch "m": the first 2 rows of a and c
    np.testing.assert_allclose(c[:2], a[:2] @ b, rtol=1e-5)
    assert (c[2:] == 7.0).all()
    g = np.zeros((5, 4), np.float32)
    blas.Product(a, c, g, trans_a=True, batch="k")(2)  # a[:2].T @ c[:2]
    np.testing.assert_allclose(g, a[:2].T @ c[:2], rtol=1e-5)


def test_product_of_single_rows_and_views(path):
    ones, delta = np.ones((1, 3), np.float32), np.arange(12, dtype=np.float32).reshape(3, 4)
    target = np.zeros(10, np.float32)
    blas.Product(ones, delta, target[2:6][None, :], batch="k")(3)
    np.testing.assert_array_equal(target, [0, 0, 12, 15, 18, 21, 0, 0, 0, 0])
    target[:] = 0
    blas.Product(ones, delta, target[2:6][None, :], batch="k")(2)  # the first 2 columns of ones
    np.testing.assert_array_equal(target, [0, 0, 4, 6, 8, 10, 0, 0, 0, 0])


def test_product_and_axpy_refuse_what_they_cannot_multiply(path):
    f32 = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError):
        blas.Product(f32, f32, f32)                       # (3, 4) @ (3, 4)
    with pytest.raises(ValueError):
        blas.Product(f32.astype(np.float64), f32.T.copy(), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError):
        blas.Product(f32[:, ::2], np.zeros((2, 3), np.float32), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError):
        blas.Product(f32, np.zeros((4, 3), np.float32), np.zeros((3, 3), np.float32).T)  # C not row-major
    with pytest.raises(ValueError):
        blas.Axpy(np.zeros(3, np.float32), np.zeros(4, np.float32))
    product = blas.Product(f32, np.zeros((4, 2), np.float32), np.zeros((3, 2), np.float32))
    for rows in (4, 0, -1):  # more rows than prepared, or none
        with pytest.raises(ValueError):
            product(rows)


def test_axpy(path):
    x, y = np.arange(5, dtype=np.float32), np.ones(5, np.float32)
    blas.Axpy(x, y)(-0.5)
    np.testing.assert_array_equal(y, 1 - 0.5 * np.arange(5, dtype=np.float32))


@pytest.mark.parametrize("env,path,says", [
    ({"BP_DIRECT_BLAS": "0"}, None, "BP_BLAS=numpy"),
    ({"BP_BLAS": "numpy"}, None, "numpy matmul"),
    ({"BP_BLAS": "scipy"}, "scipy", "scipy.linalg.blas"),
    ({"BP_BLAS": "ctypes"}, "ctypes", "NumPy's own OpenBLAS"),
    ({}, "ctypes", "the faster path here"),
])
def test_the_blas_path_is_chosen_and_says_why(monkeypatch, env, path, says):
    monkeypatch.delenv("BP_BLAS", raising=False)
    monkeypatch.delenv("BP_DIRECT_BLAS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for attr in ("_path", "_gemm", "_axpy", "_why"):
        monkeypatch.setattr(blas, attr, None)
    if path == "scipy":
        pytest.importorskip("scipy")
    if path == "ctypes" and isinstance(blas._bind_ctypes(), str):
        pytest.skip("NumPy's wheel has no ILP64 OpenBLAS here")
    assert blas.path() == path
    assert says in blas.describe()


# ---------------------------------------------------------------------------
# The engine's in-place kernels against the reference's out-of-place functions

@pytest.mark.parametrize("name", ACTIVATIONS)
def test_in_place_activations_equal_the_reference(name):
    from bpcli import network
    from bpcli.fast import kernels

    z = np.random.default_rng(0).normal(0, 5, (7, 9)).astype(np.float32)
    expected = network.ACTIVATIONS[name][0](z)
    work = z.copy()
    assert kernels.ACTIVATIONS[name][0](work) is work
    np.testing.assert_allclose(work, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(kernels.ACTIVATIONS[name][1](work), network.ACTIVATIONS[name][1](expected), rtol=1e-6)


@pytest.mark.parametrize("pair", PAIRS)
def test_output_and_delta_kernels_equal_the_reference(pair):
    from bpcli import network
    from bpcli.fast import kernels

    output, loss = pair
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (6, 10)).astype(np.float32)
    z[0] -= 200  # a row far below the batch's max: softmax must still be a distribution
    A = network.OUTPUTS[output](z)
    work = z.copy()
    np.testing.assert_allclose(kernels.OUTPUTS[output](work), A, rtol=1e-5, atol=1e-7)
    Y = one_hot(rng.integers(0, 10, 6))
    out = np.empty_like(A)
    # a shard of 6 rows of a mini-batch of 15: the mean is over the mini-batch
    kernels.output_delta(A, Y, output, loss, 15, out)
    np.testing.assert_allclose(out, network.output_delta(A, Y, output, loss) * 6 / 15, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("threads,share", [(1, 0.5), (2, 0.5), (2, 0.0), (2, 1.0), (3, 0.2)])
def test_split_cuts_every_row_once_the_callers_part_first(threads, share):
    engine = engine_for(threads=threads)
    try:
        engine.caller_share = share
        for n in (1, 5, BATCH):
            parts = engine.split(n)  # one a process: the caller's, then each worker's
            assert len(parts) == engine.shard_count and parts[0][0] == 0 and parts[-1][1] == n
            assert all(hi >= lo for lo, hi in parts) and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            if engine.shard_count > 1:
                assert parts[0] == (0, round(n * share))
    finally:
        engine.close()


def test_a_worker_lost_mid_step_is_made_good_and_training_goes_on(monkeypatch):
    """A worker process killed (the OOM killer, say) while it runs a shard and a part: the
    round's calls run again on the caller, which writes what the worker would have; the
    weights are those of an engine that never had workers."""
    parent = os.getpid()
    spec = Spec(SIZES, "relu")
    alone = FusedCore(spec, *init_params(spec, np.random.default_rng(1)), OPTIMIZERS["momentum"], BATCH, INKED,
                      shards=2)  # both shards on the caller, always: no workers to lose
    engine = engine_for()
    try:
        steps = engine.buffer((1,), np.int64)
        steps[0] = 0

        def dies_on_its_second_step(a, b, c):
            if os.getpid() != parent and steps[0] == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        job = engine.register(dies_on_its_second_step)
        for pixels, y in batches() * 2:
            X, Y = engine.inputs_of(pixels), one_hot(y)
            engine.train_batch(X, Y, 0.3, meanwhile=lambda: [None, (job, 0, 0, 0)])
            alone.train_batch(X, Y, 0.3)
            steps[0] += 1
        assert len(engine.notices) == 1 and "killed by SIGKILL" in engine.notices[0]
        assert "goes on without worker processes" in engine.notices[0]
        assert "processes" not in engine.placement.modes and engine.placement.counts["processes"] == 1
        np.testing.assert_array_equal(engine.theta, alone.theta)
    finally:
        engine.close()


def test_a_worker_lost_while_it_updates_the_weights_is_a_clean_error(monkeypatch):
    from bpcli.errors import BpError

    monkeypatch.setattr(sharding, "PARALLEL_UPDATE_FROM", 0)  # the update's parts on the worker too
    engine = engine_for()
    real = Update.finish_part

    def finish_part(self, i, lr, shards):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, i, lr, shards)

    parent = os.getpid()
    monkeypatch.setattr(Update, "finish_part", finish_part)
    try:
        pixels, y = batches()[0]
        with pytest.raises(BpError, match=r"killed by SIGKILL\) while it updated the weights.*--resume"):
            engine.train_batch(engine.inputs_of(pixels), one_hot(y), 0.3)
    finally:
        engine.close()
