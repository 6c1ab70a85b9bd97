"""Every engine (train.ENGINES) trains a run to the same weights, within float32 rounding:
the fast engine is held to the reference engine, the code bp teaches, through bp train's
whole loop (shuffling, schedules, label smoothing, dropout, augmentation, resume).
tests/test_fast.py holds the two step by step for every activation, output, cost,
optimizer and thread count."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from bpcli.checkpoint import load_model, read_checkpoint
from bpcli.cli import cli
from bpcli.train import ENGINES
from synthetic import NEEDS_MNIST, tiny_mnist
from test_train import BASE, run

RECIPES = {
    "nesterov, cosine, smoothing": ["train.optimizer=sgd", "train.nesterov=true", "train.schedule=cosine",
                                   "train.label_smoothing=0.1", "train.weight_decay=5e-4", "train.warmup_epochs=1"],
    "adam, dropout, max_norm": ["train.optimizer=adam", "train.lr=0.003", "model.dropout=0.2", "train.max_norm=3"],
    "the seed network": ["model.hidden=[16, 16]", "model.activation=sigmoid", "model.output=sigmoid",
                         "model.loss=mse", "model.init=normal", "train.momentum=0", "train.lr=3",
                         "train.schedule=constant", "train.batch_size=10"],
    "augmented": ["train.augment={shift: 1.5, rotate: 8, scale: 0.08}", "model.activation=tanh"],
}


@pytest.fixture(scope="module")
def data():
    return tiny_mnist(n_train=300, n_test=60)


def weights(run_dir, name="last.npz"):
    model = load_model(f"{run_dir}/{name}")
    return np.concatenate([a.ravel() for a in model.Ws + model.bs])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_engine_trains_a_run_to_the_same_weights(data, tmp_path, recipe, threads):
    sets = [*BASE, "train.epochs=2", *RECIPES[recipe]]
    trained, accuracy = {}, {}
    for engine in ENGINES:
        summary, run_dir = run(data, tmp_path, engine, [*sets, f"train.engine={engine}"], threads=threads)
        trained[engine], accuracy[engine] = weights(run_dir), summary["test_accuracy"]
    np.testing.assert_allclose(trained["fast"], trained["reference"], rtol=2e-4, atol=2e-5)
    assert accuracy["fast"] == accuracy["reference"] > 0.5  # (ten classes: chance is 0.1)


def test_a_reference_run_resumes_exactly(data, tmp_path):
    """Interrupted and resumed, the reference engine ends where an uninterrupted run ends."""
    from test_train import SignalAt

    from bpcli.train import Interrupted

    sets = [*BASE, "train.epochs=2", "train.engine=reference", *RECIPES["augmented"]]
    _, whole = run(data, tmp_path, "whole", sets)
    with pytest.raises(Interrupted):
        run(data, tmp_path, "cut", sets, progress=SignalAt(5))
    run(data, tmp_path, "cut", sets, resume_from=str(tmp_path / "cut" / "last.npz"))
    np.testing.assert_array_equal(weights(whole), weights(tmp_path / "cut"))


def test_the_engine_is_a_flag_a_key_and_recorded(tmp_path):
    shown = CliRunner().invoke(cli, ["config", "--engine", "reference"])
    assert shown.exit_code == 0 and "engine: reference" in shown.output
    bad = CliRunner().invoke(cli, ["config", "--set", "train.engine=slow"])
    assert bad.exit_code == 2 and "train.engine" in bad.output


def test_a_reference_checkpoint_says_where_its_steps_ran(data, tmp_path):
    _, run_dir = run(data, tmp_path, "r", [*BASE, "train.epochs=1", "train.engine=reference"])
    _, meta = read_checkpoint(f"{run_dir}/last.npz", arrays=False)
    assert meta["config"]["train"]["engine"] == "reference"
    assert meta["steps_by_workers"] == {"serial": -(-(len(data.train_labels) - 100) // 32)}
    assert json.loads(open(f"{run_dir}/result.json").read())["state"] == "finished"


@NEEDS_MNIST
def test_the_default_recipe_trains_the_same_bits_wherever_its_shards_run(mnist_data_dir, tmp_path):
    """bp train -c default's first steps (its network, its augmentation shared out with the
    shards, its update in parts): on 2 threads, worker processes, worker threads and bp
    alone (BP_WORKERS) train the same weights, bit for bit; on 1 thread, the fast engine
    trains the reference engine's, within float32 rounding."""
    args = ["train", "-c", "default", "--epochs", "1", "--seed", "0", "--quiet",
            "--set", "data.limit=3000", "--set", "data.validation=500"]
    trained = {}
    for name, threads, workers, engine in [("processes", 2, "processes", "fast"), ("threads", 2, "threads", "fast"),
                                           ("serial", 2, "serial", "fast"), ("fast", 1, "", "fast"),
                                           ("reference", 1, "", "reference")]:
        run_dir = tmp_path / name
        result = CliRunner().invoke(cli, [*args, "--threads", str(threads), "--engine", engine, "--run-dir", str(run_dir)],
                                    env={"BP_DATA_DIR": str(mnist_data_dir), "BP_OFFLINE": "1", "BP_WORKERS": workers})
        assert result.exit_code == 0, result.output
        trained[name] = weights(run_dir)
        _, meta = read_checkpoint(str(run_dir / "last.npz"), arrays=False)
        assert meta["steps_by_workers"][workers or "serial"] > 0, meta["steps_by_workers"]
    np.testing.assert_array_equal(trained["threads"], trained["processes"])
    np.testing.assert_array_equal(trained["serial"], trained["processes"])
    np.testing.assert_allclose(trained["fast"], trained["reference"], rtol=2e-4, atol=2e-5)
