"""The web page's training sample: drawn by a seed, bounded, and the seed network's start
exactly as bp train -c seed draws it."""

import base64
import json

import numpy as np
import pytest
from click.testing import CliRunner

from bpcli import websample
from bpcli.cli import cli
from bpcli.errors import ConfigError, DataError
from synthetic import tiny_mnist, write_model


def read_sample_js(path):
    text = open(path, encoding="utf-8").read()
    prefix = "window.BP_SAMPLE = "
    start = text.index(prefix) + len(prefix)
    return json.loads(text[start:text.rindex(";")])


def decode(doc_part):
    X = np.frombuffer(base64.b64decode(doc_part["pixels"]), np.uint8).reshape(doc_part["n"], 784)
    y = np.frombuffer(base64.b64decode(doc_part["labels"]), np.uint8)
    return X, y


def test_the_sample_is_drawn_by_its_seed_from_train_and_test_apart():
    data = tiny_mnist(n_train=600, n_test=200)
    doc = websample.sample_document(data, 50)
    again = websample.sample_document(data, 50)
    other = websample.sample_document(data, 50, seed=1)
    assert doc == again and doc["train"]["indices"] != other["train"]["indices"]
    train, held = doc["train"], doc["heldout"]
    assert train["n"] == 50 and len(set(train["indices"])) == 50
    assert held["n"] == 50  # min(HELD_OUT, n): a small sample holds out as many
    X, y = decode(train)
    assert np.array_equal(X, data.train_images[train["indices"]]) and np.array_equal(y, data.train_labels[train["indices"]])
    X, y = decode(held)
    assert np.array_equal(X, data.test_images[held["indices"]]) and np.array_equal(y, data.test_labels[held["indices"]])
    with pytest.raises(ConfigError, match="--train-sample must be from 1 to 600"):
        websample.sample_document(data, 601)


@pytest.mark.parametrize("seed", [0, 7])
def test_scratch_is_the_start_of_bp_train_c_seed(seed, tmp_path):
    """The page's "from scratch" weights are those train.Run draws for -c seed --seed S."""
    from bpcli.config import recipes, resolve
    from bpcli.train import Run

    values = resolve(recipes()["seed"], [f"seed={seed}", "data.validation=0"])
    run = Run(values, tiny_mnist(), tmp_path / "run")
    try:
        Ws, bs = run.model_params()
    finally:
        run.engine.close()
    doc = websample.sample_document(tiny_mnist(), 10, seed=seed)["scratch"]
    assert doc["sizes"] == [784, 16, 16, 10] and (doc["activation"], doc["output"], doc["loss"]) == ("sigmoid", "sigmoid", "mse")
    assert doc["lr"] == 0.5 and doc["batch_size"] == 10
    for b64, array in zip(doc["W"] + doc["b"], Ws + bs):
        assert np.array_equal(np.frombuffer(base64.b64decode(b64), "<f4").reshape(array.shape), array)


def test_sample_script_is_one_assignment_or_null():
    assert websample.sample_script(None).endswith("window.BP_SAMPLE = null;\n")
    doc = websample.sample_document(tiny_mnist(), 20)
    text = websample.sample_script(doc)
    assert json.loads(text[text.index("= ") + 2:text.rindex(";")]) == doc


def test_no_sample_without_mnist_says_what_to_do(tmp_path, clean_bp_env):
    model_path = write_model(tmp_path / "m.npz")
    from bpcli.checkpoint import load_model

    assert websample.load_sample(load_model(model_path), 0) is None
    with pytest.raises(DataError, match="--train-sample 0"):
        websample.load_sample(load_model(model_path), 100, data_dir=str(tmp_path / "empty"))
    assert not (tmp_path / "empty").exists()  # read only: nothing created, nothing fetched


def test_cli_export_web_embeds_the_sample_of_the_verified_mnist(mnist_data_dir, tmp_path):
    model_path = write_model(tmp_path / "m.npz")
    site = tmp_path / "site"
    result = CliRunner().invoke(cli, ["export", str(model_path), "--web", str(site), "--data-dir", str(mnist_data_dir)])
    assert result.exit_code == 0, result.output
    assert str(site / "sample.js") in result.stdout.split()
    doc = read_sample_js(site / "sample.js")
    assert (doc["train"]["n"], doc["heldout"]["n"]) == (websample.DEFAULT_TRAIN_SAMPLE, websample.HELD_OUT)
    # the size README states: 3,000 + 1,000 images of 784 bytes in base64, a few hundred bytes more
    size = (site / "sample.js").stat().st_size
    assert 4_180_000 < size < 4_400_000, size
    result = CliRunner().invoke(cli, ["export", str(model_path), "--web", str(tmp_path / "s2"), "--train-sample", "0"])
    assert result.exit_code == 0, result.output
    assert read_sample_js(tmp_path / "s2" / "sample.js") is None


def test_cli_export_web_without_mnist_is_one_error_line_or_a_page_without_the_panel(tmp_path, clean_bp_env):
    """A sample asked for needs MNIST; by default, a page without the Train panel (and a note)."""
    model_path = write_model(tmp_path / "m.npz")
    result = CliRunner().invoke(cli, ["export", str(model_path), "--web", str(tmp_path / "site"),
                                      "--data-dir", str(tmp_path / "empty"), "--train-sample", "100"])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "--train-sample 0" in result.output and not (tmp_path / "site").exists()
    result = CliRunner().invoke(cli, ["export", str(model_path), "--web", str(tmp_path / "site"),
                                      "--data-dir", str(tmp_path / "empty")])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("note: no Train panel: ") and result.stderr.count("\n") == 1
    assert (tmp_path / "site" / "sample.js").read_text().endswith("window.BP_SAMPLE = null;\n")
    result = CliRunner().invoke(cli, ["export", str(model_path), "--web", str(tmp_path / "site"),
                                      "--train-sample", str(websample.MAX_TRAIN_SAMPLE + 1)])
    assert result.exit_code == 2 and "--train-sample" in result.output


def test_cli_serve_serves_the_sample(mnist_data_dir, tmp_path):
    """bp serve --train-sample N: the served sample.js is the sample of the data dir's MNIST."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    from bpcli.checkpoint import load_model

    model_path = write_model(tmp_path / "m.npz")
    proc = subprocess.Popen([sys.executable, "-m", "bpcli.cli", "serve", str(model_path), "--train-sample", "200",
                             "--data-dir", str(mnist_data_dir)], env={**os.environ, "TMPDIR": str(tmp_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + proc.stderr.read()
        with urllib.request.urlopen(url.group(0) + "sample.js", timeout=10) as r:
            served = r.read().decode()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    sample = websample.load_sample(load_model(model_path), 200, str(mnist_data_dir))
    assert served == websample.sample_script(sample) and sample["train"]["n"] == 200
    assert proc.returncode == 130
