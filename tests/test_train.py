"""Training runs: determinism, exact resume, interruption, divergence, run dirs."""

import json
import os
import signal

import numpy as np
import pytest

from bpcli import train as train_mod
from bpcli.checkpoint import load_model, read_checkpoint
from bpcli.config import resolve
from bpcli.errors import BpError, CheckpointError, ConfigError, TrainingDiverged
from bpcli.rundir import create as new_run_dir
from bpcli.train import Interrupted, Progress, train
from synthetic import tiny_mnist

# (the default recipe's augmentation, weight decay, warm-up, label smoothing and large
# learning rate off: on 600 images a test wants a few plain epochs to learn)
BASE = ["data.validation=100", "model.hidden=[24, 12]", "train.batch_size=32", "train.augment=false",
        "train.weight_decay=0", "train.warmup_epochs=0", "train.label_smoothing=0", "train.lr=0.1"]


@pytest.fixture(scope="module")
def data():
    return tiny_mnist(n_train=700, n_test=150)


def weights(run_dir, name="last.npz"):
    arrays, _ = read_checkpoint(os.path.join(run_dir, name))
    return {k: v for k, v in arrays.items() if k[0] in "Wb"}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def resume(data, run_dir, threads=None, progress=None, **flags):
    """What bp train --resume RUN_DIR [--epochs N] [--threads N] does."""
    ckpt = os.path.join(run_dir, "last.npz")
    flags = {f"train.{k}": v for k, v in flags.items()}
    return train(train_mod.resume_config(ckpt, flags), data, str(run_dir), resume_from=ckpt, threads=threads,
                 progress=progress)


def run(data, tmp_path, name, sets=(), progress=None, resume_from=None, cfg=None, threads=1):
    cfg = cfg or resolve(None, [*BASE, *sets])
    run_dir = str(tmp_path / name)
    return train(cfg, data, run_dir, resume_from=resume_from, progress=progress, threads=threads), run_dir


def test_training_learns_and_writes_the_run_dir(data, tmp_path, runs_root):
    summary, run_dir = run(data, tmp_path, "r", ["train.epochs=3"])
    assert sorted(os.listdir(run_dir)) == [".lock", "best.npz", "config.yaml", "last.npz", "metrics.jsonl",
                                           "result.json"]
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    for key in ("train_loss", "train_accuracy", "val_accuracy", "lr", "seconds", "samples_per_second"):
        assert key in lines[0]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert summary["test_accuracy"] > 0.9
    assert set(summary) >= {"run_dir", "epochs", "best_epoch", "val_accuracy", "test_accuracy", "seconds",
                            "train_seconds", "samples_per_second"}
    model = load_model(os.path.join(run_dir, "best.npz"))
    assert model.spec.sizes == [784, 24, 12, 10]
    assert os.path.realpath(runs_root / "latest") == os.path.realpath(run_dir)
    assert json.load(open(os.path.join(run_dir, "result.json")))["test_accuracy"] == summary["test_accuracy"]


def test_best_is_the_best_validation_epoch(data, tmp_path):
    _, run_dir = run(data, tmp_path, "r", ["train.epochs=4"])
    history = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    _, meta = read_checkpoint(os.path.join(run_dir, "best.npz"))
    best = max(history, key=lambda m: m["val_accuracy"])
    assert meta["best"]["val_accuracy"] == best["val_accuracy"]
    assert meta["epoch"] == meta["best"]["epoch"]


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_weights_bitwise(data, tmp_path, threads):
    sets = ["train.epochs=2", "model.dropout=0.2"]
    _, a = run(data, tmp_path, "a", sets, threads=threads)
    _, b = run(data, tmp_path, "b", sets, threads=threads)
    _, c = run(data, tmp_path, "c", [*sets, "seed=1"], threads=threads)
    assert_same_weights(weights(a), weights(b))
    assert not np.array_equal(weights(a)["W0"], weights(c)["W0"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_extending_epochs_equals_one_long_run(data, tmp_path, optimizer):
    # the schedule is a function of train.epochs, so extending a run is exact under 'constant'
    sets = ["train.schedule=constant", f"train.optimizer={optimizer}", "model.dropout=0.1"]
    _, full = run(data, tmp_path, "full", [*sets, "train.epochs=4"])
    _, part = run(data, tmp_path, "part", [*sets, "train.epochs=2"])
    summary = resume(data, part, epochs=4)
    assert summary["epochs"] == 4
    assert_same_weights(weights(full), weights(part))
    assert len(open(os.path.join(part, "metrics.jsonl")).readlines()) == 4


class SignalAt(Progress):
    """Sends this process a real signal after the given number of steps."""

    def __init__(self, at, signum=signal.SIGINT):
        super().__init__(quiet=True)
        self.at, self.signum, self.steps = at, signum, 0

    def step(self, loss):
        self.steps += 1
        if self.steps == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("at,signum", [(3, signal.SIGINT), (19, signal.SIGTERM), (40, signal.SIGINT)])
def test_interrupt_then_resume_equals_uninterrupted(data, tmp_path, at, signum, threads):
    # 600 training rows / 32 = 19 steps per epoch: 19 is an epoch's last step; the
    # resumed run takes the thread count from the checkpoint
    sets = ["train.epochs=3", "model.dropout=0.1"]
    _, full = run(data, tmp_path, "full", sets, threads=threads)
    with pytest.raises(Interrupted) as info:
        run(data, tmp_path, "cut", sets, progress=SignalAt(at, signum), threads=threads)
    assert info.value.exit_code == 130
    cut = str(tmp_path / "cut")
    assert f"bp train --resume {cut}" in str(info.value)
    resume(data, cut)
    assert_same_weights(weights(full), weights(cut))
    assert open(os.path.join(full, "metrics.jsonl")).read().count("\n") == 3
    full_hist = [json.loads(l) for l in open(os.path.join(full, "metrics.jsonl"))]
    cut_hist = [json.loads(l) for l in open(os.path.join(cut, "metrics.jsonl"))]
    for a, b in zip(full_hist, cut_hist):
        assert a["train_loss"] == b["train_loss"] and a["val_accuracy"] == b["val_accuracy"]
        assert a["train_accuracy"] == b["train_accuracy"]


def test_threads_are_recorded_and_reapplied_on_resume(data, tmp_path):
    summary, run_dir = run(data, tmp_path, "r", ["train.epochs=1"], threads=2)
    assert summary["threads"] == 2
    _, meta = read_checkpoint(os.path.join(run_dir, "last.npz"), arrays=False)
    assert meta["threads"] == 2 and meta["blas"]
    summary = resume(data, run_dir, epochs=2)  # no thread count asked: the run's own
    assert summary["threads"] == 2
    assert read_checkpoint(os.path.join(run_dir, "last.npz"), arrays=False)[1]["threads"] == 2


def test_resuming_on_another_thread_count_warns(data, tmp_path):
    import io

    _, run_dir = run(data, tmp_path, "r", ["train.epochs=1"], threads=2)
    stream = io.StringIO()
    summary = resume(data, run_dir, threads=1, epochs=2, progress=Progress(quiet=True, stream=stream))
    assert summary["threads"] == 1
    assert "trained on 2 threads" in stream.getvalue() and "--threads 2" in stream.getvalue()
    stream = io.StringIO()
    resume(data, run_dir, threads=1, epochs=3, progress=Progress(quiet=True, stream=stream))
    assert stream.getvalue() == ""  # the same count as recorded: nothing to say


def test_threads_default_to_the_usable_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert train_mod.choose_threads(None) == (3, None)
    assert train_mod.choose_threads(4) == (4, None)


def test_interrupt_right_after_a_tally_resumes_exactly(data, tmp_path):
    # batches of 16: 38 steps an epoch, and step TALLY_EVERY has just tallied the loss
    sets = ["train.epochs=2", "train.batch_size=16"]
    _, full = run(data, tmp_path, "full", sets)
    with pytest.raises(Interrupted):
        run(data, tmp_path, "cut", sets, progress=SignalAt(train_mod.TALLY_EVERY))
    resume(data, tmp_path / "cut")
    assert_same_weights(weights(full), weights(tmp_path / "cut"))


def test_divergence_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    epochs_done = []
    real_costs, real_finish = train_mod.example_costs, train_mod.Run.finish_epoch

    def costs_that_explode(*args):
        costs = real_costs(*args)
        return costs * np.nan if epochs_done else costs  # in epoch 2

    def finish_epoch(self, seconds):
        epochs_done.append(self.epoch)
        return real_finish(self, seconds)

    monkeypatch.setattr(train_mod, "example_costs", costs_that_explode)
    monkeypatch.setattr(train_mod.Run, "finish_epoch", finish_epoch)
    with pytest.raises(TrainingDiverged) as info:
        run(data, tmp_path, "r", ["train.epochs=3"])
    assert "with a lower learning rate, e.g. bp train -c " in str(info.value) and info.value.exit_code == 1
    _, meta = read_checkpoint(tmp_path / "r" / "last.npz")
    assert meta["epoch"] == 1 and all(np.isfinite(w).all() for w in weights(tmp_path / "r").values())


def test_real_divergence_with_a_huge_learning_rate(data, tmp_path):
    with pytest.raises(TrainingDiverged):
        run(data, tmp_path, "r", ["train.epochs=2", "train.lr=1e30", "train.schedule=constant"])


def test_validation_zero_trains_on_all_and_best_is_last(data, tmp_path):
    summary, run_dir = run(data, tmp_path, "r", ["train.epochs=2", "data.validation=0"])
    assert summary["best_epoch"] == 2 and summary["val_accuracy"] is None


def test_validation_larger_than_the_data_is_a_config_error(data, tmp_path):
    with pytest.raises(ConfigError, match="data.validation"):
        run(data, tmp_path, "r", ["data.validation=5000"])


def test_existing_run_dir_is_refused_unless_forced(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "last.npz").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="--resume"):
        new_run_dir(str(d))
    assert (d / "last.npz").read_bytes() == b"precious"
    new_run_dir(str(d), force=True)
    assert not (d / "last.npz").exists()


def test_default_run_dirs_are_unique(tmp_path, monkeypatch):
    monkeypatch.setenv("BP_RUNS_DIR", str(tmp_path))
    a, b = new_run_dir(), new_run_dir()
    assert a != b and os.path.isdir(a) and os.path.isdir(b)


def test_resume_refuses_other_flags(data, tmp_path):
    _, run_dir = run(data, tmp_path, "r", ["train.epochs=1"])
    ckpt = os.path.join(run_dir, "last.npz")
    with pytest.raises(ConfigError, match="only --epochs"):
        train_mod.resume_config(ckpt, {"train.lr": 0.5})
    with pytest.raises(ConfigError, match="extend"):
        train_mod.resume_config(ckpt, {"train.epochs": 0})


def test_run_dir_under_a_file_is_a_clean_error(data, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BpError, match="cannot create run dir"):
        run(data, tmp_path, "file/run", ["train.epochs=1"])


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch):
    import errno

    _, run_dir = run(data, tmp_path, "r", ["train.epochs=1", "train.schedule=constant"])
    before = open(os.path.join(run_dir, "last.npz"), "rb").read()
    real_savez = np.savez

    def savez_on_full_disk(f, **arrays):
        real_savez(f, **arrays)  # half the bytes are written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_on_full_disk)
    with pytest.raises(BpError, match="No space left"):
        resume(data, run_dir, epochs=2)
    assert open(os.path.join(run_dir, "last.npz"), "rb").read() == before
    assert sorted(os.listdir(run_dir)) == [".lock", "best.npz", "config.yaml", "last.npz", "metrics.jsonl",
                                           "result.json"]  # no temp file left


def test_leaving_blank_pixels_out_equals_the_full_computation(tmp_path):
    """Training skips pixels that are 0 in every training image; the result must be
    what plain backprop over all 784 inputs gives (up to float rounding)."""
    from bpcli.network import backward, forward, one_hot
    from bpcli.optim import SGD
    from bpcli.train import Run, seeds

    data = tiny_mnist(n_train=300, n_test=50, seed=3)
    data.train_images[:, :100] = 0  # a blank border, as in MNIST
    data.train_images[:, 700:] = 0
    cfg = resolve(None, ["data.validation=0", "model.hidden=[16]", "train.batch_size=32",
                         "train.schedule=constant", "train.nesterov=false", "train.weight_decay=0.01",
                         "train.epochs=1", "train.augment=false", "train.warmup_epochs=0", "train.lr=0.1",
                         "train.label_smoothing=0"])
    run = Run(cfg, data, str(tmp_path / "r"))
    assert run.engine.layout.k == 600
    run.train_epoch(Progress(quiet=True), [])
    Ws_fast, bs_fast = run.model_params()

    # the same epoch, written plainly: every pixel, per-layer arrays
    init_rng, _, rng = seeds(0)
    from bpcli.network import init_params
    Ws, bs = init_params(run.spec, init_rng)
    opts = [SGD(p, momentum=0.9, weight_decay=0.01 if p.ndim == 2 else 0.0) for p in Ws + bs]
    X_all, y_all = data.train_images, data.train_labels
    perm = rng.permutation(len(y_all))
    for i in range(0, len(perm), 32):
        idx = perm[i:i + 32]
        X = X_all[idx].astype(np.float32) / 255
        acts, masks = forward(Ws, bs, X, run.spec)
        dWs, dbs = backward(Ws, acts, masks, one_hot(y_all[idx]), run.spec)
        for opt, g in zip(opts, dWs + dbs):
            opt.step(g, 0.1)
    for fast, plain in zip(Ws_fast + bs_fast, Ws + bs):
        np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-6)
    # blank pixels' weights only decayed: w * (1 - lr*wd)^k with momentum folded in
    assert not np.array_equal(Ws_fast[0][:100], init_params(run.spec, seeds(0)[0])[0][:100])


@pytest.mark.parametrize("threads", [1, 2])
def test_augmented_training_is_seeded_and_resumes_exactly(data, tmp_path, threads):
    # the next batch is augmented while the current one trains: an interruption must
    # save the random stream as it was before that batch's draws
    sets = ["train.epochs=2", "train.augment={shift: 2, rotate: 10, elastic: 10}", "model.dropout=0.1"]
    _, full = run(data, tmp_path, "full", sets, threads=threads)
    _, again = run(data, tmp_path, "again", sets, threads=threads)
    assert_same_weights(weights(full), weights(again))
    with pytest.raises(Interrupted):
        run(data, tmp_path, "cut", sets, progress=SignalAt(7), threads=threads)
    cut = str(tmp_path / "cut")
    resume(data, cut)
    assert_same_weights(weights(full), weights(cut))
    _, plain = run(data, tmp_path, "plain", ["train.epochs=2"])
    assert not np.array_equal(weights(full)["W0"], weights(plain)["W0"])


@pytest.mark.parametrize("mode", ["processes", "threads"])
def test_workers_train_the_bits_of_the_caller_alone(data, tmp_path, monkeypatch, mode):
    """The shards, the augmentation's warps and the update's parts, shared out among worker
    processes or threads, give the weights of bp running them all itself."""
    from bpcli.fast.parallel import sharding
    from bpcli.fast.parallel.placement import ShardPlacement

    monkeypatch.setattr(sharding, "PARALLEL_UPDATE_FROM", 0)
    sets = ["train.epochs=2", "train.augment={shift: 2, rotate: 10, elastic: 10}", "model.dropout=0.1",
            "train.nesterov=true", "train.weight_decay=0.001"]
    monkeypatch.setattr(ShardPlacement, "choose", lambda self: "serial")
    _, alone = run(data, tmp_path, "alone", sets, threads=2)
    monkeypatch.setattr(ShardPlacement, "choose", lambda self: mode)
    _, workers = run(data, tmp_path, "workers", sets, threads=2)
    assert_same_weights(weights(alone), weights(workers))
    _, meta = read_checkpoint(os.path.join(workers, "last.npz"), arrays=False)
    assert meta["steps_by_workers"][mode] > 0 and meta["steps_by_workers"]["serial"] == 0


def test_early_stopping_stops_when_validation_stops_improving(data, tmp_path, monkeypatch):
    # validation accuracy that peaks at epoch 2, then only falls
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])
    monkeypatch.setattr(train_mod, "loss_and_accuracy",
                        lambda *args, threads: (0.1, next(scores)) if len(args[-1]) == 100 else (0.1, 0.5))
    summary, run_dir = run(data, tmp_path, "r", ["train.epochs=8", "train.patience=2"])
    assert summary["epochs"] == 4 and summary["best_epoch"] == 2
    assert len(open(os.path.join(run_dir, "metrics.jsonl")).readlines()) == 4


def test_label_smoothing_and_max_norm_train(data, tmp_path):
    summary, run_dir = run(data, tmp_path, "r", ["train.epochs=2", "train.label_smoothing=0.1",
                                                 "train.max_norm=1.5", "train.warmup_epochs=1"])
    assert summary["test_accuracy"] > 0.8
    for key, W in weights(run_dir).items():
        if key.startswith("W"):
            assert np.linalg.norm(W, axis=0).max() <= 1.5 + 1e-5


# ---------------------------------------------------------------------------
# Divergence: caught at every tally and epoch end; nothing non-finite is saved; the
# previous good run stays runs/latest.

def a_good_run(data, tmp_path):
    _, good = run(data, tmp_path, "good", ["train.epochs=1"])
    return good


@pytest.mark.parametrize("sets", [
    ["train.lr=1e30"],                            # many steps an epoch: the tally sees it
    ["train.lr=1e30", "train.batch_size=1000"],   # one step an epoch: only the weights show it
], ids=["tally", "one-step-epochs"])
def test_a_run_diverging_in_its_first_epoch_saves_nothing_and_keeps_latest(data, tmp_path, runs_root, sets):
    good = a_good_run(data, tmp_path)
    with pytest.raises(TrainingDiverged) as info:
        run(data, tmp_path, "bad", ["train.epochs=2", "train.schedule=constant", *sets])
    message = str(info.value)
    assert "nothing was saved" in message and "last.npz" not in message
    bad = tmp_path / "bad"
    assert not (bad / "best.npz").exists() and not (bad / "last.npz").exists()
    assert os.path.realpath(runs_root / "latest") == os.path.realpath(good)
    result = json.load(open(bad / "result.json"))
    assert result["state"] == "diverged" and result["epochs_done"] == 0


def test_a_run_diverging_later_keeps_its_last_good_checkpoint(data, tmp_path, monkeypatch):
    """Good epochs, then the weights blow up: the message names the last good checkpoint,
    which exists, and best.npz stays finite."""
    _, run_dir = run(data, tmp_path, "r", ["train.epochs=1", "train.schedule=constant"])
    before = weights(run_dir)
    real_finish = train_mod.Run.finish_epoch

    def blow_up(self, seconds):
        self.engine.theta[:] = np.inf  # what an exploding step leaves behind
        return real_finish(self, seconds)

    monkeypatch.setattr(train_mod.Run, "finish_epoch", blow_up)
    with pytest.raises(TrainingDiverged) as info:
        resume(data, run_dir, epochs=2)
    assert f"{os.path.join(run_dir, 'last.npz')} (epoch 1)" in str(info.value)
    assert_same_weights(weights(run_dir), before)
    assert all(np.isfinite(w).all() for w in weights(run_dir, "best.npz").values())


def test_outputs_that_overflow_with_finite_weights_count_as_divergence(data, tmp_path, monkeypatch):
    real_finish = train_mod.Run.finish_epoch

    def huge(self, seconds):
        self.engine.theta *= np.float32(1e30)  # finite, but z = x @ W overflows to inf
        return real_finish(self, seconds)

    monkeypatch.setattr(train_mod.Run, "finish_epoch", huge)
    with pytest.raises(TrainingDiverged, match="validation loss"):
        run(data, tmp_path, "r", ["train.epochs=1"])


def test_resume_with_more_epochs_rewrites_config_yaml(data, tmp_path):
    import yaml

    _, run_dir = run(data, tmp_path, "r", ["train.epochs=1"])
    resume(data, run_dir, epochs=2)
    assert yaml.safe_load(open(os.path.join(run_dir, "config.yaml")))["train"]["epochs"] == 2


def test_checkpoints_respect_the_umask(data, tmp_path):
    old = os.umask(0o077)
    try:
        _, run_dir = run(data, tmp_path, "r", ["train.epochs=1"])
    finally:
        os.umask(old)
    for name in ("best.npz", "last.npz", "config.yaml", "metrics.jsonl", "result.json"):
        assert os.stat(os.path.join(run_dir, name)).st_mode & 0o777 == 0o600, name


# --- a tampered last.npz is refused before anything is taken over -------------------

@pytest.fixture(scope="module")
def cut_runs(data, tmp_path_factory):
    """{optimizer: run dir} of runs interrupted mid-epoch 2 (step > 0, epoch_rng set)."""
    runs = {}
    for optimizer in ("sgd", "adam"):
        tmp = tmp_path_factory.mktemp(optimizer)
        cfg = resolve(None, [*BASE, "train.epochs=3", f"train.optimizer={optimizer}"])
        steps = -(-600 // 32)
        with pytest.raises(Interrupted):
            train(cfg, data, str(tmp / "cut"), progress=StopAt(steps + 3))
        runs[optimizer] = tmp / "cut"
    return runs


class StopAt(Progress):
    """Progress that sends the run a stop request after ``n`` batches."""

    def __init__(self, n):
        super().__init__(quiet=True)
        self.n = n

    def step(self, loss=None):
        self.n -= 1
        if self.n == 0:
            os.kill(os.getpid(), signal.SIGINT)


DELETE = object()


def tamper(run_dir, dest, meta_changes=None, array_changes=None):
    """Copy run_dir to dest with its last.npz's meta and arrays changed (DELETE deletes)."""
    import shutil

    shutil.copytree(run_dir, dest)
    path = os.path.join(dest, "last.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    for changes, target in ((meta_changes, meta), (array_changes, arrays)):
        for key, value in (changes or {}).items():
            if value is DELETE:
                target.pop(key, None)
            else:
                target[key] = value
    with open(path, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return dest


PCG = {"bit_generator": "PCG64", "state": {"state": 1, "inc": 1}, "has_uint32": 0, "uinteger": 0}
TAMPERED = {
    "epoch negative": ({"epoch": -1}, None, "'epoch'"),
    "epoch a string": ({"epoch": "1"}, None, "'epoch'"),
    "epoch past the run": ({"epoch": 99}, None, "'epoch'"),
    "step past the epoch": ({"step": 10**9}, None, "'step'"),
    "step negative": ({"step": -1}, None, "'step'"),
    "step a float": ({"step": 1.5}, None, "'step'"),
    "rng a string": ({"rng": "seed"}, None, "'rng'"),
    "rng empty": ({"rng": {}}, None, "'rng'"),
    "rng of another generator": ({"rng": {**PCG, "bit_generator": "MT19937"}}, None, "'rng'"),
    "rng state out of range": ({"rng": {**PCG, "state": {"state": 2**200, "inc": 1}}}, None, "'rng'"),
    "rng state a string": ({"rng": {**PCG, "state": {"state": "x", "inc": 1}}}, None, "'rng'"),
    "epoch_rng null mid-epoch": ({"epoch_rng": None}, None, "'epoch_rng'"),
    "epoch_rng a list": ({"epoch_rng": [1, 2]}, None, "'epoch_rng'"),
    "partial a string": ({"partial": "half"}, None, "'partial'"),
    "partial seen beyond the data": ({"partial": {"loss_sum": 1.0, "correct": 1, "seen": 10**9, "seconds": 1.0}},
                                     None, "'partial'"),
    "partial loss a string": ({"partial": {"loss_sum": "x", "correct": 1, "seen": 2, "seconds": 1.0}},
                              None, "'partial'"),
    "metrics not a list": ({"metrics": "all good"}, None, "'metrics'"),
    "metrics too short": ({"metrics": []}, None, "'metrics'"),
    "best null after an epoch": ({"best": None}, None, "'best'"),
    "best from the future": ({"best": {"epoch": 7, "val_accuracy": 0.5}}, None, "'best'"),
    "best accuracy a string": ({"best": {"epoch": 1, "val_accuracy": "high"}}, None, "'best'"),
    "train_seconds a string": ({"train_seconds": "long"}, None, "'train_seconds'"),
    "train_seconds nan": ({"train_seconds": float("nan")}, None, "'train_seconds'"),
    "threads zero": ({"threads": 0}, None, "'threads'"),
    "threads a string": ({"threads": "many"}, None, "'threads'"),
    "config field of the wrong type": ({"config": {"train": {"batch_size": "32"}}}, None, "train.batch_size"),
    "optimizer state missing": (None, {"opt.v0": DELETE}, "opt.v0"),
    "optimizer state of the wrong shape": (None, {"opt.v1": np.zeros(3, np.float32)}, "opt.v1"),
    "optimizer state float64": (None, {"opt.v1": np.zeros(46, np.float64)}, "opt.v1 as float64"),
    "optimizer state nan": (None, {"opt.v1": np.full(46, np.nan, np.float32)}, "nan or inf values in opt.v1"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_resuming_a_tampered_checkpoint_is_one_clean_error(case, cut_runs, data, tmp_path):
    meta_changes, array_changes, needle = TAMPERED[case]
    run_dir = tamper(cut_runs["sgd"], tmp_path / "run", meta_changes, array_changes)
    before = open(run_dir / "last.npz", "rb").read()
    with pytest.raises(CheckpointError, match=needle) as info:
        resume(data, run_dir)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
    assert open(run_dir / "last.npz", "rb").read() == before


@pytest.mark.parametrize("changes, needle", [
    ({"opt.t": np.array(-5, np.int64)}, "opt.t"),
    ({"opt.t": np.zeros(2, np.int64)}, r"opt.t of shape \(2,\)"),
    ({"opt.v0": np.full(24 * 784 + 12 * 24 + 10 * 12, -1.0, np.float32)}, "opt.v0"),
    ({"opt.m1": DELETE}, "opt.m1"),
])
def test_resuming_tampered_adam_state_is_one_clean_error(changes, needle, cut_runs, data, tmp_path):
    run_dir = tamper(cut_runs["adam"], tmp_path / "run", None, changes)
    with pytest.raises(CheckpointError, match=needle):
        resume(data, run_dir)


def test_the_untampered_cut_runs_resume(cut_runs, data, tmp_path):
    for optimizer, run_dir in cut_runs.items():
        summary = resume(data, tamper(run_dir, tmp_path / optimizer))
        assert summary["epochs"] == 3


@pytest.mark.parametrize("lr, suggested", [(1e30, "0.1"), (3.0, "0.1"), (0.5, "0.05"), (1e-4, "1e-05")])
def test_the_suggested_learning_rate_is_one_that_could_work_written_as_a_flag(lr, suggested):
    """After lr 1e30 diverged, a tenth of it ('1e+29') would fail the same way."""
    from bpcli.train import gentler_lr

    assert gentler_lr(lr) == suggested
    assert float(gentler_lr(lr)) < lr


# --- the BLAS kernels a run trained on ---------------------------------------------

def test_a_checkpoint_records_its_blas_kernel_and_resuming_on_another_warns(data, tmp_path):
    import io

    from bpcli.fast import blas

    if blas.kernel() is None:
        pytest.skip("threadpoolctl cannot tell this BLAS's kernels")
    _, run_dir = run(data, tmp_path, "r", ["train.epochs=1"])
    _, meta = read_checkpoint(os.path.join(run_dir, "last.npz"), arrays=False)
    assert meta["blas"]["kernel"] == blas.kernel() and meta["blas"]["description"] == blas.describe()
    stream = io.StringIO()
    resume(data, run_dir, epochs=2, progress=Progress(quiet=True, stream=stream))
    assert stream.getvalue() == ""  # the same kernels: nothing to say
    # the run as if trained elsewhere (a kernel this process is not running)
    other = "Prescott" if blas.kernel() != "Prescott" else "Haswell"
    elsewhere = tamper(run_dir, tmp_path / "elsewhere", {"blas": {**meta["blas"], "kernel": other}})
    stream = io.StringIO()
    summary = resume(data, elsewhere, epochs=3, progress=Progress(quiet=True, stream=stream))
    assert summary["epochs"] == 3  # it carries on
    said = stream.getvalue()
    assert f"trained on OpenBLAS's {other} kernels, this process has {blas.kernel()}" in said
    assert "not bit for bit" in said and f"OPENBLAS_CORETYPE={other}" in said


@pytest.mark.parametrize("recorded", [DELETE, "BLAS: NumPy's own OpenBLAS via ctypes (the faster path here)",
                                      {"kernel": None}, {"kernel": "x" * 500}, {"kernel": "Sky\nlake"}])
def test_checkpoints_without_a_readable_kernel_resume_without_a_word_about_it(recorded, data, tmp_path):
    """Checkpoints from before the kernel was recorded (no "blas", or the one line that described
    the path), and kernels not worth echoing, resume as before."""
    import io

    _, run_dir = run(data, tmp_path, "r", ["train.epochs=1"])
    old = tamper(run_dir, tmp_path / "old", {"blas": recorded})
    stream = io.StringIO()
    assert resume(data, old, epochs=2, progress=Progress(quiet=True, stream=stream))["epochs"] == 2
    assert stream.getvalue() == ""
    assert load_model(os.path.join(old, "best.npz")).spec.sizes == [784, 24, 12, 10]
