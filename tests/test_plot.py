"""bp plot: four valid PNGs of the expected sizes from a run dir; a clear error without matplotlib."""

import json
import os
import re
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
    result = CliRunner().invoke(cli, ["plot", str(tmp_path / "nope")])  # a MODEL: a checkpoint or a run dir
    assert result.exit_code == 1 and result.output.startswith("Error: checkpoint") and "not found" in result.output
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["plot", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "has no best.npz yet" in result.output


def test_read_metrics_reads_a_good_file(tmp_path):
    from bpcli.plot import read_metrics

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 0.5}) + "\n\n")
    assert read_metrics(str(tmp_path)) == [{"epoch": 1, "train_loss": 0.5}]


# A malformed metrics.jsonl: one line naming the file, the line and what is wrong.
ROW = {"epoch": 2, "epochs": 3, "train_loss": 0.4, "train_accuracy": 0.9, "val_loss": 0.5, "val_accuracy": 0.85}
GOOD = json.dumps({**ROW, "epoch": 1}) + "\n"
BAD_METRICS = {
    "not JSON": (GOOD + "{not json\n", "line 2 is not JSON (Expecting property name enclosed in double quotes, "
                                        "column 2)"),
    "a list": (GOOD + "[1, 2, 3]\n", "line 2 is a JSON array, not an object of one epoch's metrics"),
    "a string number": (GOOD + json.dumps({**ROW, "val_loss": "0.5"}) + "\n",
                        'line 2: val_loss is "0.5" (a string), not a number'),
    "a list number": (GOOD + json.dumps({**ROW, "train_loss": [0.4]}) + "\n",
                      "line 2: train_loss is an array, not a number"),
    "a boolean": (GOOD + json.dumps({**ROW, "train_accuracy": True}) + "\n",
                  "line 2: train_accuracy is true (a boolean), not a number"),
    "no epoch": (GOOD + json.dumps({"train_loss": 0.3}) + "\n", "line 2: epoch is missing, not a whole number"),
    "epoch a string": ('{"epoch": "one"}\n', 'line 1: epoch is "one" (a string), not a whole number'),
    "epoch NaN": ('{"epoch": NaN}\n', "line 1: epoch is null, not a whole number"),
    "not UTF-8": (GOOD + '{"epoch": 2, "x": "\xff"}\n', "line 2 is not UTF-8 text"),
    "nested deep": ("[" * 30_000 + "]" * 30_000 + "\n", "line 1 is not a metrics row (nested too deeply)"),
}


@pytest.mark.parametrize("case", sorted(BAD_METRICS))
def test_a_malformed_row_is_one_line_naming_file_and_line(case, tmp_path):
    from bpcli.plot import read_metrics

    text, expected = BAD_METRICS[case]
    (tmp_path / "metrics.jsonl").write_bytes(text.encode("latin-1" if case == "not UTF-8" else "utf-8"))
    with pytest.raises(BpError) as info:
        read_metrics(str(tmp_path))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'metrics.jsonl'} {expected}"), message
    assert "\n" not in message and len(message) < 400


def test_nan_and_infinity_are_missing_values_not_a_crash(tmp_path):
    from bpcli.plot import read_metrics

    (tmp_path / "metrics.jsonl").write_text(
        GOOD + '{"epoch": 2, "train_loss": NaN, "train_accuracy": Infinity, "val_loss": -Infinity, '
               '"val_accuracy": 1e999, "lr": NaN}\n')
    rows = read_metrics(str(tmp_path))
    assert rows[1] == {"epoch": 2, "train_loss": None, "train_accuracy": None, "val_loss": None,
                       "val_accuracy": None, "lr": None}


@NEEDS_MATPLOTLIB
def test_learning_curves_of_rows_without_numbers(tmp_path):
    from bpcli.plot import plot_learning_curves, read_metrics

    (tmp_path / "metrics.jsonl").write_text(GOOD + '{"epoch": 2, "train_accuracy": NaN}\n')  # no train_loss
    size = plot_learning_curves(read_metrics(str(tmp_path)), tmp_path / "lc.png")
    assert png_size(tmp_path / "lc.png") == size == EXPECTED["learning_curves"]


def test_an_empty_metrics_file_holds_no_epochs(tmp_path):
    from bpcli.plot import read_metrics

    (tmp_path / "metrics.jsonl").write_bytes(b"")
    with pytest.raises(BpError, match=r"metrics\.jsonl holds no epochs; train the run for at least one epoch"):
        read_metrics(str(tmp_path))


def test_a_10_mb_line_is_refused_without_reading_it_whole(tmp_path):
    from bpcli.plot import read_metrics

    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.write(GOOD + '{"epoch": 2, "note": "' + "x" * 10_000_000 + '"}\n')  # valid JSON, absurd
    with pytest.raises(BpError) as info:
        read_metrics(str(tmp_path))
    assert re.match(re.escape(f"{tmp_path / 'metrics.jsonl'} line 2 is over ") + r"[\d,]+ bytes; a bp metrics row",
                    str(info.value)), str(info.value)


def test_a_metrics_file_over_the_cap_is_refused_before_reading(tmp_path):
    from bpcli.plot import MAX_METRICS_BYTES, read_metrics

    with open(tmp_path / "metrics.jsonl", "wb") as f:
        f.truncate(MAX_METRICS_BYTES + 1)  # sparse: no real bytes on disk
    with pytest.raises(BpError) as info:
        read_metrics(str(tmp_path))
    assert str(info.value).startswith(f"metrics file {tmp_path / 'metrics.jsonl'} is "
                                      f"{MAX_METRICS_BYTES + 1:,} bytes, over bp's limit")


def test_a_metrics_fifo_is_refused_without_blocking(tmp_path):
    """Under a timeout: a reader that opened the FIFO would wait for a writer forever."""
    import concurrent.futures

    from bpcli.plot import read_metrics

    os.mkfifo(tmp_path / "metrics.jsonl")
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(read_metrics, str(tmp_path))
    try:
        with pytest.raises(BpError, match=r"metrics\.jsonl is a named pipe \(FIFO\), not a regular file"):
            future.result(timeout=20)
    except concurrent.futures.TimeoutError:  # pragma: no cover - the failure being guarded
        os.close(os.open(tmp_path / "metrics.jsonl", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO metrics.jsonl blocked")
    finally:
        pool.shutdown(wait=False)


# The run dir and its checkpoint: each problem one clean line.

@pytest.mark.parametrize("kind", ["missing", "a file", "a FIFO", "a loop", "a newline"])
def test_cli_plot_of_a_run_dir_that_is_no_folder(kind, tmp_path):
    path = tmp_path / ("run\ndir" if kind == "a newline" else "run")
    expected = {"missing": "not found", "a file": "is not a bp checkpoint",  # a file means a checkpoint
                "a FIFO": "is a named pipe (FIFO), not a folder",
                "a loop": "is a symbolic link that loops back on itself", "a newline": "not found"}[kind]
    if kind == "a file":
        path.write_text("x")
    elif kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a loop":
        os.symlink(tmp_path / "other", path)
        os.symlink(path, tmp_path / "other")
    result = CliRunner().invoke(cli, ["plot", str(path)])
    assert result.exit_code == 1, result.output
    shown = str(path).replace("\n", "\\n")
    # plot takes a MODEL, as every command does: anything but a folder is a checkpoint
    assert result.output.startswith(f"Error: checkpoint {shown}") and result.output.count("\n") == 1
    assert expected.replace(", not a folder", "") in result.output


def test_cli_plot_of_a_run_without_a_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(GOOD)
    os.mkfifo(tmp_path / "best.npz")  # not a checkpoint either, and must not be opened
    result = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: checkpoint {tmp_path / 'best.npz'} is a named pipe (FIFO)")


def test_cli_plot_of_a_malformed_metrics_file(tmp_path):
    from synthetic import write_model

    write_model(tmp_path / "best.npz")
    (tmp_path / "metrics.jsonl").write_text(GOOD + "[]\n")
    result = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"Error: {tmp_path / 'metrics.jsonl'} line 2 is a JSON array")
    assert result.output.count("\n") == 1
