"""The Python API: bpcli.load_model(...).predict(X) agrees with bp predict and bp evaluate,
refuses bad input with a clear ValueError, and the README's example runs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

import bpcli
import synthetic
from bpcli.cli import cli
from bpcli.errors import CheckpointError, ImageError
from bpcli.image import load_digit
from bpcli.rundir import point_latest
from synthetic import real_mnist_folder

README = Path(__file__).parents[1] / "README.md"


def write_model(path, activation="relu", output="softmax", loss="cross_entropy", hidden=(16,), seed=0):
    return synthetic.write_model(path, activation, output, loss, hidden, seed, epoch=1)


def draw_digit(path, seed=0):
    """A picture of a hand-drawn-looking digit: dark strokes on light paper."""
    rng = np.random.default_rng(seed)
    im = Image.new("L", (120, 160), 235)
    points = [tuple(int(v) for v in rng.integers(20, 140, 2)) for _ in range(4)]
    ImageDraw.Draw(im).line(points, fill=20, width=9)
    im.save(path)
    return path


@pytest.fixture
def model_path(tmp_path):
    return write_model(tmp_path / "best.npz")


@pytest.fixture
def model(model_path):
    return bpcli.load_model(model_path)


def batch(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, 784)) < 0.2, rng.integers(0, 256, (n, 784)), 0).astype(np.uint8)


def test_import_bpcli_stays_cheap_and_lazy():
    code = ("import sys, bpcli; heavy = {'numpy', 'PIL', 'requests', 'yaml'} & set(sys.modules); "
            "print(sorted(heavy), callable(bpcli.load_model), callable(bpcli.prepare_image))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True True"


def test_load_model_follows_the_one_rule(tmp_path, model_path, runs_root):
    assert bpcli.load_model(str(model_path)).path == str(model_path)
    assert bpcli.load_model(model_path.parent).path == str(model_path.parent / "best.npz")  # a run dir
    with pytest.raises(CheckpointError, match="no model yet"):
        bpcli.load_model()
    point_latest(model_path.parent)
    assert os.path.samefile(bpcli.load_model().path, model_path)
    with pytest.raises(CheckpointError, match="not found"):
        bpcli.load_model(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("junk")
    with pytest.raises(CheckpointError, match="not a bp checkpoint"):
        bpcli.load_model(tmp_path / "bad.npz")


def test_every_input_form_gives_the_same_answer(model):
    X = batch(7)
    P = model.predict_proba(X)
    assert P.shape == (7, 10) and P.dtype == np.float32
    np.testing.assert_allclose(P.sum(axis=1), 1, atol=1e-5)
    digits = model.predict(X)
    assert digits.shape == (7,) and (digits == P.argmax(axis=1)).all()
    for same in (X.reshape(7, 28, 28), X.astype(np.int64), X.tolist(), X / 255, (X / 255).astype(np.float32),
                 (X / 255).reshape(7, 28, 28).astype(np.float16)):
        np.testing.assert_allclose(model.predict_proba(same), P, atol=2e-3 if getattr(same, "dtype", None)
                                   == np.float16 else 1e-6)
    assert (model.predict(X.reshape(7, 28, 28)) == digits).all()
    assert model.predict(X[:0]).shape == (0,) and model.predict_proba(np.zeros((0, 28, 28))).shape == (0, 10)
    assert "784-16-10 relu, softmax + cross_entropy" in repr(model) and list(model.classes_) == list(range(10))


def test_sigmoid_outputs_are_normalised_as_bp_predict_reports_them(tmp_path):
    model = bpcli.load_model(write_model(tmp_path / "s.npz", "sigmoid", "sigmoid", "mse"))
    P = model.predict_proba(batch(4))
    np.testing.assert_allclose(P.sum(axis=1), 1, atol=1e-5)


X_OK = np.zeros((2, 784), np.uint8)


@pytest.mark.parametrize("X,words", [
    (np.zeros(784, np.uint8), "one image of shape (784,)"),
    (np.zeros((28, 28), np.uint8), "x[None]"),
    (np.zeros((2, 783), np.uint8), "shape (2, 783), expected (n, 784) or (n, 28, 28)"),
    (np.zeros((2, 28, 27)), "shape (2, 28, 27)"),
    (np.zeros((28, 28, 3), np.uint8), "prepare_image"),  # an RGB picture as an array
    (np.zeros((1, 1, 28, 28)), "shape (1, 1, 28, 28)"),
    (np.zeros((2, 784), bool), "booleans"),
    (np.zeros((2, 784), complex), "complex128"),
    (np.zeros((2, 784), object), "object"),
    (np.full((2, 784), "0"), "<U1"),
    ("digit.png", "prepare_image(path)"),
    ([[0] * 784, [0] * 783], "not a rectangular array"),
    (np.full((2, 784), 255.0), "from 255 to 255, outside [0, 1]; it looks like levels 0..255: pass X / 255"),
    (np.full((2, 784), -0.5), "outside [0, 1]"),
    (np.full((2, 784), 1e6), "outside [0, 1]"),
    (np.where(np.eye(2, 784) > 0, np.nan, 0.5), "NaN"),
    (np.where(np.eye(2, 784) > 0, np.inf, 0.5), "infinite"),
    (np.full((2, 784), 256, np.int32), "integers from 256 to 256"),
    (np.full((2, 784), -1, np.int8), "integers from -1 to -1"),
])
def test_bad_input_is_a_clear_value_error(model, X, words):
    for method in (model.predict, model.predict_proba):
        with pytest.raises(ValueError) as info:
            method(X)
        message = str(info.value)
        assert words in message
        assert "broadcast" not in message and "\n" not in message


def test_prepare_image_is_what_bp_predict_feeds_the_model(tmp_path, model_path, model):
    png = draw_digit(tmp_path / "digit.png")
    x = bpcli.prepare_image(png)
    assert x.shape == (28, 28) and x.dtype == np.uint8
    assert (x.ravel() == load_digit(str(png))).all()
    assert (bpcli.prepare_image(str(png)) == x).all()
    with Image.open(png) as im:
        before = im.copy()
        assert (bpcli.prepare_image(im) == x).all()
        assert im.tobytes() == before.tobytes()  # the caller's picture is not changed
        assert (bpcli.prepare_image(np.asarray(im)) == x).all()  # a grey array, uint8
        assert (bpcli.prepare_image(im.convert("RGB")) == x).all()

    result = CliRunner().invoke(cli, ["predict", str(png), "--model", str(model_path), "--json"])
    assert result.exit_code == 0, result.output
    (reported,) = json.loads(result.stdout)
    p = model.predict_proba(x[None])[0]
    assert reported["digit"] == int(model.predict(x[None])[0])
    np.testing.assert_allclose(p, reported["probabilities"], atol=1e-6)  # bp predict rounds to 6 places


def test_prepare_image_errors(tmp_path):
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(ImageError, match="not an image"):
        bpcli.prepare_image(tmp_path / "text.png")
    with pytest.raises(ImageError, match="no digit found"):
        bpcli.prepare_image(Image.new("L", (50, 50), 200))
    with pytest.raises(TypeError, match="file path, a Pillow image or a 2-D array"):
        bpcli.prepare_image(42)
    with pytest.raises(ValueError, match="2-D grey-level array"):
        bpcli.prepare_image(np.zeros((4, 28, 28)))
    with pytest.raises(ValueError, match="NaN"):
        bpcli.prepare_image(np.full((28, 28), np.nan))


def test_the_api_agrees_with_bp_evaluate_on_real_mnist(tmp_path):
    from bpcli.data import load_mnist

    folder = real_mnist_folder() or pytest.skip("real MNIST not found")
    env = {"BP_DATA_DIR": str(tmp_path / "data"), "BP_MNIST_MIRROR": str(folder), "BP_OFFLINE": "",
           "BP_RUNS_DIR": str(tmp_path / "runs")}
    config = Path(__file__).parents[1] / "configs" / "smoke.yaml"
    result = CliRunner().invoke(cli, ["train", "-c", str(config), "--json", "--quiet"], env=env)
    assert result.exit_code == 0, result.output
    run_dir = json.loads(result.stdout)["run_dir"]
    doc = json.loads(CliRunner().invoke(cli, ["evaluate", run_dir, "--json"], env=env).stdout)

    data = load_mnist(env["BP_DATA_DIR"], offline=True, progress=False)
    model = bpcli.load_model(run_dir)
    digits = model.predict(data.test_images.reshape(-1, 28, 28))
    assert float(np.mean(digits == data.test_labels)) == doc["accuracy"]
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (data.test_labels, digits), 1)
    assert confusion.tolist() == doc["confusion"]
    assert (model.predict(data.test_images / 255.0) == digits).mean() > 0.999  # float input: same scale


def readme_python_api_example():
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_example_runs(monkeypatch, capsys, runs_root):
    """As written, from a checkout (it reads bpcli/samples/seven.png), on runs/latest."""
    run = runs_root / "20260101-000000"
    run.mkdir(parents=True)
    write_model(run / "best.npz", hidden=(32, 16))
    (runs_root / "latest").symlink_to(run.name)
    monkeypatch.chdir(README.parent)  # (only read there)
    exec(compile(readme_python_api_example(), "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "784-32-16-10 relu, softmax + cross_entropy"
    digit = bpcli.load_model(str(run)).predict(bpcli.prepare_image("bpcli/samples/seven.png")[None])
    assert lines[1] == str(digit)
    assert "x[None]" in lines[-1]


def test_load_model_takes_a_bytes_path_as_open_does(model_path, tmp_path):
    model = bpcli.load_model(os.fsencode(model_path))
    assert model.predict(batch()).shape == (5,)
    with pytest.raises(CheckpointError, match="not found"):
        bpcli.load_model(os.fsencode(tmp_path / "no-such-run" / "best.npz"))


@pytest.mark.parametrize("path,words", [
    ("/proc/self/mem", "unreadable"),             # a regular file by stat whose read fails (EIO)
    ("runs/x\0y", "NUL character"),
    ("/proc/self/status", "not an .npz archive"),
])
def test_load_model_of_an_unreadable_path_is_bps_own_error(path, words):
    with pytest.raises(CheckpointError, match=words) as err:
        bpcli.load_model(path)
    assert "\n" not in str(err.value)


def test_load_model_of_something_not_a_path_says_what_it_takes():
    with pytest.raises(TypeError, match="expects a path to a run dir or a checkpoint .* got int"):
        bpcli.load_model(42)
