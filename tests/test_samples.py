"""The sample drawings that ship with bp: drawn by tests/draw_samples.py, and read as the
digits they show by a model trained on real MNIST."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import draw_samples
from bpcli.cli import cli

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "bpcli" / "samples").glob("*.png"))


def test_the_shipped_samples_are_the_projects_own_drawings():
    assert [p.stem for p in SAMPLES] == sorted(draw_samples.STROKES)
    for path in SAMPLES:
        shipped = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
        drawn = np.asarray(draw_samples.draw(path.stem), dtype=np.int16)
        assert shipped.shape == drawn.shape and np.abs(shipped - drawn).max() <= 1, path


def test_a_model_trained_on_mnist_reads_each_sample_as_its_digit(mnist_data_dir, tmp_path):
    env = {"BP_DATA_DIR": str(mnist_data_dir), "BP_OFFLINE": "1"}
    trained = CliRunner().invoke(cli, ["train", "-c", "smoke", "--run-dir", str(tmp_path / "r"), "--quiet"], env=env)
    assert trained.exit_code == 0, trained.output
    result = CliRunner().invoke(cli, ["predict", *map(str, SAMPLES), "--model", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    digits = {"seven": 7, "three": 3}
    assert [p["digit"] for p in json.loads(result.stdout)] == [digits[p.stem] for p in SAMPLES]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_a_sample_is_small_and_ships_in_the_package(path):
    from importlib import resources

    assert path.stat().st_size < 100_000
    assert resources.files("bpcli").joinpath("samples", path.name).is_file()
