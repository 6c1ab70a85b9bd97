"""The edges of a bp process: Ctrl-C and SIGTERM anywhere, a stdout that cannot be written,
file names that would break a one-line error, and JSON that stays JSON (issue 12, area 4 and 6)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bpcli.cli import cli
from bpcli.jsonio import dumps, finite

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


def start(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "bpcli.cli", *args], cwd=REPO, text=True,
                            env={**os.environ, "BP_OFFLINE": "", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_part(folder, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.exists() and any(folder.glob("*.part")):
            return
        time.sleep(0.02)
    raise AssertionError("the download never started")


@pytest.mark.parametrize("command", ["download", "train"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_a_download_is_one_line_and_exit_130(tmp_path, real_mnist_dir, make_server, command, signum):
    server = make_server()
    server.add_dir(real_mnist_dir)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-labels-idx1-ubyte"):
        server.behaviour[f"/{name}.gz"] = "trickle"  # half a file, then nothing: still downloading
    data = tmp_path / "data"
    args = ["--mirror", server.url] if command == "download" else ["-c", SMOKE, "--quiet"]
    proc = start(command, *args, "--data-dir", str(data), env={"BP_MNIST_MIRROR": server.url})
    wait_for_part(data)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    # 130 as a shell sees it: exit(130), or (rarely, an interrupt landing as the interpreter
    # exits) ended by SIGINT itself, which a shell also reports as 128 + 2
    assert proc.returncode in (130, -signal.SIGINT), err
    assert err.strip().splitlines()[-1].startswith("Error: interrupted")
    assert "Aborted" not in err and "Traceback" not in err
    assert not list(data.glob("*.part"))  # the partial download went with it


def test_ctrl_c_in_any_command_is_exit_130(monkeypatch, tmp_path):
    import bpcli.predict

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(bpcli.predict, "predict_images", interrupted)
    monkeypatch.setattr("bpcli.cli._load_model", lambda path: (path, None))
    result = CliRunner().invoke(cli, ["predict", "x.png"])
    assert result.exit_code == 130 and result.output.startswith("Error: interrupted"), result.output


def test_stdout_on_a_full_device_is_an_error_line_not_a_traceback():
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "bpcli.cli", "config"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: cannot write the output: No space left on device"


def test_a_finished_training_is_in_its_run_dir_even_if_stdout_fails(mnist_data_dir, tmp_path):
    run = tmp_path / "r"
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "bpcli.cli", "train", "-c", SMOKE, "--epochs", "1",
                               "--run-dir", str(run), "--json", "--quiet"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=300,
                              env={**os.environ, "BP_DATA_DIR": str(mnist_data_dir), "BP_OFFLINE": "1"})
    assert proc.returncode == 1 and "Error: cannot write the output" in proc.stderr
    result = json.loads((run / "result.json").read_text())
    assert result["state"] == "finished" and 0.5 < result["test_accuracy"] <= 1


def test_a_file_name_with_a_newline_gives_a_one_line_error(tmp_path):
    bad = tmp_path / "two\nlines.npz"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(cli, ["evaluate", str(bad)])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error:")


def test_json_never_holds_nan_or_infinity():
    doc = {"loss": float("nan"), "a": [1.0, float("inf"), -float("inf")], "n": 3, "ok": 0.5}
    assert finite(doc) == {"loss": None, "a": [1.0, None, None], "n": 3, "ok": 0.5}
    assert json.loads(dumps(doc)) == finite(doc)  # strict parsers accept it


@pytest.fixture
def overflowing_model(tmp_path):
    """A model with finite weights so large that its outputs are NaN: what a diverged
    run that escaped detection, or a forged file, would hand evaluate and predict."""
    from bpcli.checkpoint import save_checkpoint
    from bpcli.config import resolve
    from bpcli.network import init_params
    from bpcli.train import spec_of

    cfg = resolve(None, ["model.hidden=[8]"])
    values, spec = cfg.values, spec_of(cfg.recipe.model)
    Ws, bs = init_params(spec, np.random.default_rng(0))
    Ws = [np.full_like(W, 1e30) for W in Ws]
    Ws[1][:, 0] = -1e30
    path = tmp_path / "huge.npz"
    save_checkpoint(path, Ws, bs, {"config": values, "sizes": spec.sizes, "epoch": 1})
    return path


def test_evaluate_of_a_model_with_nan_outputs_says_it_diverged(overflowing_model, mnist_data_dir):
    result = CliRunner().invoke(cli, ["evaluate", str(overflowing_model), "--json", "--data-dir",
                                      str(mnist_data_dir)])
    assert result.exit_code == 1 and result.stdout == ""  # as predict and export say: no report
    assert "not numbers: the model has diverged" in result.stderr


def test_predict_says_a_model_with_nan_outputs_has_no_answer(overflowing_model, tmp_path):
    from PIL import Image

    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255
    Image.fromarray(image).save(tmp_path / "one.png")
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "one.png"), "--model", str(overflowing_model)])
    assert result.exit_code == 1 and "nan" not in result.output.lower().replace("diverged", "")
    assert "not a number" in result.output
    doc = json.loads(CliRunner().invoke(cli, ["predict", str(tmp_path / "one.png"), "--model",
                                              str(overflowing_model), "--json"]).stdout)
    assert doc[0]["digit"] is None and "error" in doc[0]
