"""bp plot: four valid PNGs of the expected sizes from a run dir; a clear error without matplotlib."""

import json
import os
import struct
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from bpcli.cli import cli
from bpcli.config import resolve
from bpcli.errors import BpError
from bpcli.train import train
from synthetic import tiny_mnist

try:
    import matplotlib  # noqa: F401
    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False

NEEDS_MATPLOTLIB = pytest.mark.skipif(not HAVE_MATPLOTLIB, reason=(
    "matplotlib is not installed: bp plot is an optional extra (pip install -e '.[plot]')"))

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# figure size x 100 dpi, for a run whose first layer has 12 neurons (weights.png grows with it)
EXPECTED = {"learning_curves": (1000, 400), "weights": (800, 688), "confusion": (700, 600),
            "misclassified": (1100, 901)}


def png_size(path):
    """(width, height) from the IHDR chunk, after checking the PNG signature."""
    with open(path, "rb") as f:
        head = f.read(33)
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", head[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def data():
    return tiny_mnist(n_train=500, n_test=200)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data):
    run = tmp_path_factory.mktemp("runs") / "run"
    cfg = resolve(None, ["data.validation=100", "model.hidden=[12]", "train.epochs=2", "train.batch_size=32"])
    train(cfg, data, str(run))
    return run


@NEEDS_MATPLOTLIB
def test_plot_run_writes_four_valid_pngs(run_dir, data, tmp_path):
    from bpcli.plot import plot_run

    written = plot_run(str(run_dir), str(tmp_path / "out"), data=data)
    assert [w["name"] for w in written] == list(EXPECTED)
    for w in written:
        assert w["path"] == str(tmp_path / "out" / f"{w['name']}.png")
        assert png_size(w["path"]) == (w["width"], w["height"]) == EXPECTED[w["name"]]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(f"{name}.png" for name in EXPECTED)  # no temp files left


@NEEDS_MATPLOTLIB
def test_pictures_from_arrays(tmp_path):
    from bpcli.plot import plot_confusion, plot_misclassified, plot_weights, weight_mosaic

    W0 = np.random.default_rng(0).standard_normal((784, 256))
    mosaic, n = weight_mosaic(W0)
    assert n == 256 and mosaic.shape == (16 * 29 - 1, 16 * 29 - 1)
    assert np.nanmax(np.abs(mosaic)) == 1.0
    size = plot_weights(W0, tmp_path / "w.png")
    assert png_size(tmp_path / "w.png") == size and size[0] > 800  # wider when there are more tiles

    C = np.diag([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    C[4, 9] = 7
    size = plot_confusion(C, tmp_path / "c.png")
    assert png_size(tmp_path / "c.png") == size == EXPECTED["confusion"]

    none = plot_misclassified(np.zeros((0, 784), np.uint8), [], [], [], tmp_path / "m.png", total=0)
    assert png_size(tmp_path / "m.png") == none == EXPECTED["misclassified"]


@NEEDS_MATPLOTLIB
def test_cli_plot_defaults_to_run_dir_plots(run_dir, data, monkeypatch):
    import bpcli.data

    monkeypatch.setattr(bpcli.data, "load_mnist_for", lambda *args, **kwargs: data)  # offline, tiny
    result = CliRunner().invoke(cli, ["plot", str(run_dir)])
    assert result.exit_code == 0, result.output
    for name, (w, h) in EXPECTED.items():
        path = run_dir / "plots" / f"{name}.png"
        assert png_size(path) == (w, h)
        assert str(path) in result.output and f"{w}x{h}" in result.output


def test_cli_plot_without_matplotlib_says_how_to_install(run_dir, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = CliRunner().invoke(cli, ["plot", str(run_dir)])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: bp plot needs matplotlib: pip install -e '.[plot]' "
                                     "(or pip install matplotlib)")


@NEEDS_MATPLOTLIB
def test_cli_plot_of_a_folder_that_is_no_run(tmp_path):
    result = CliRunner().invoke(cli, ["plot", str(tmp_path / "nope")])
    assert result.exit_code == 1 and result.output.startswith("Error: run dir")
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["plot", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "metrics.jsonl not found" in result.output


def test_read_metrics_refuses_garbage(tmp_path):
    from bpcli.plot import read_metrics

    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(BpError, match="cannot read"):
        read_metrics(str(tmp_path))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 0.5}) + "\n")
    assert read_metrics(str(tmp_path)) == [{"epoch": 1, "train_loss": 0.5}]
