"""The commands end to end, as a user and a CI script run them (real MNIST when present)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bpcli.cli import cli
from synthetic import NEEDS_MNIST, real_mnist_folder


@pytest.fixture(scope="module")
def mnist_env(tmp_path_factory):
    """Environment for bp with a verified MNIST cache (from the local copy) and a private runs dir."""
    folder = real_mnist_folder()
    if folder is None:
        pytest.skip("real MNIST not found")
    data = tmp_path_factory.mktemp("data")
    runs = tmp_path_factory.mktemp("runs")
    env = {"BP_DATA_DIR": str(data), "BP_RUNS_DIR": str(runs), "BP_MNIST_MIRROR": str(folder),
           "BP_OFFLINE": ""}
    result = CliRunner().invoke(cli, ["download"], env=env)
    assert result.exit_code == 0, result.output
    return env


@pytest.fixture(scope="module")
def smoke_run(mnist_env):
    """bp train -c configs/smoke.yaml --json, once for the module."""
    config = Path(__file__).parents[1] / "configs" / "smoke.yaml"
    result = CliRunner().invoke(cli, ["train", "-c", str(config), "--json", "--quiet"], env=mnist_env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_help_lists_every_command_without_heavy_imports():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert len(cli.commands) == 12
    for command in cli.commands:
        assert command in result.output
    heavy = "{'numpy', 'requests', 'PIL', 'yaml', 'tqdm', 'matplotlib', 'optuna', 'sqlalchemy'}"
    code = f"import sys, bpcli.cli; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_command_and_flag_exit_2():
    assert CliRunner().invoke(cli, ["trian"]).exit_code == 2
    assert CliRunner().invoke(cli, ["train", "--epochz", "3"]).exit_code == 2


def test_gradcheck_passes_for_every_shipped_config():
    for config in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        result = CliRunner().invoke(cli, ["gradcheck", "-c", str(config)])
        assert result.exit_code == 0, result.output
        assert "layer 1: max relative error" in result.output


def test_gradcheck_fails_when_backprop_is_wrong(monkeypatch):
    import bpcli.network as network

    monkeypatch.setitem(network.ACTIVATIONS, "relu", (network.relu, lambda a: a * 0 + 0.5))
    result = CliRunner().invoke(cli, ["gradcheck"])
    assert result.exit_code == 1 and "Error: backprop disagrees" in result.output


@NEEDS_MNIST
def test_train_says_when_a_batch_is_too_small_for_every_thread(mnist_env, tmp_path, monkeypatch):
    """Batch-10 learning recipes stay on one shard; the first line says so."""
    from bpcli.fast.parallel import sharding

    monkeypatch.setattr(sharding, "SHARD_MIN_MACS", 1 << 23)  # the real rule (conftest lowers it)
    args = ["train", "-c", "seed", "--set", "data.limit=600", "--set", "data.validation=100", "--epochs", "1",
            "--threads", "2", "--run-dir", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, args, env=mnist_env)
    assert result.exit_code == 0, result.output
    assert "2 threads (1 used: a batch of 10 is too small to split further)" in result.stderr
    wide = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "w"), "--batch-size", "256", "--hidden", "512"],
                              env=mnist_env)
    assert wide.exit_code == 0, wide.output
    assert "2 threads on worker processes, BLAS" in wide.stderr
    assert ", 1 epoch, " in wide.stderr
    serial = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "s"), "--batch-size", "256", "--hidden", "512"],
                                env=dict(mnist_env, BP_WORKERS="serial"))
    assert serial.exit_code == 0, serial.output
    assert "2 threads (their shards one after another on bp itself: BP_WORKERS=serial), BLAS" in serial.stderr
    reference = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "ref"), "--batch-size", "256", "--hidden",
                                         "512", "--engine", "reference"], env=mnist_env)
    assert reference.exit_code == 0, reference.output
    assert "1 thread (the reference engine trains on bp itself), BLAS" in reference.stderr  # no workers


def test_smoke_training_on_real_mnist(smoke_run, mnist_env):
    assert smoke_run["test_accuracy"] >= 0.85
    assert smoke_run["epochs"] == 2 and 0 <= smoke_run["val_accuracy"] <= 1
    run_dir = Path(smoke_run["run_dir"])
    assert {p.name for p in run_dir.iterdir()} == {"config.yaml", "metrics.jsonl", "last.npz", "best.npz",
                                                   "result.json", ".lock"}
    assert (Path(mnist_env["BP_RUNS_DIR"]) / "latest").resolve() == run_dir.resolve()
    with np.load(run_dir / "best.npz", allow_pickle=False) as ckpt:
        assert ckpt["W0"].shape == (784, 64) and ckpt["W0"].dtype == np.float32


@NEEDS_MNIST
def test_evaluate_json_is_self_consistent(smoke_run, mnist_env):
    result = CliRunner().invoke(cli, ["evaluate", "--json"], env=mnist_env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"checkpoint", "split", "dataset", "classes", "n", "accuracy", "loss", "per_digit",
                        "confusion"}
    assert doc["dataset"] == "mnist" and doc["classes"] == [str(d) for d in range(10)]
    C = np.array(doc["confusion"])
    assert C.shape == (10, 10) and C.sum() == doc["n"] == 10000
    for d in range(10):
        row = doc["per_digit"][str(d)]
        assert C[d].sum() == row["support"] and C[d, d] == row["correct"]
        assert row["accuracy"] == pytest.approx(row["correct"] / row["support"])
        assert row["precision"] == pytest.approx(C[d, d] / C[:, d].sum())
    assert doc["accuracy"] == pytest.approx(np.trace(C) / doc["n"])
    assert doc["accuracy"] == pytest.approx(smoke_run["test_accuracy"])


@NEEDS_MNIST
def test_evaluate_val_of_a_run_without_validation_is_a_usage_error(mnist_env, tmp_path):
    config = Path(__file__).parents[1] / "configs" / "smoke.yaml"
    run_dir = tmp_path / "no-val"
    trained = CliRunner().invoke(cli, ["train", "-c", str(config), "--epochs", "1", "--set", "data.validation=0",
                                       "--run-dir", str(run_dir), "--quiet"], env=mnist_env)
    assert trained.exit_code == 0, trained.output
    result = CliRunner().invoke(cli, ["evaluate", str(run_dir / "best.npz"), "--split", "val"], env=mnist_env)
    assert result.exit_code == 2
    assert result.output.startswith("Error:") and "--split test" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_evaluate_text_report_and_splits(smoke_run, mnist_env):
    # (runs/latest may have moved to a later test's run: name the smoke run)
    best = str(Path(smoke_run["run_dir"]) / "best.npz")
    result = CliRunner().invoke(cli, ["evaluate", best, "--split", "val"], env=mnist_env)
    assert result.exit_code == 0, result.output
    assert "(500 images)" in result.output  # smoke.yaml holds out 500
    assert "confusion matrix (rows: true digit, columns: predicted)" in result.output
    assert "most confused:" in result.output
    val = json.loads(CliRunner().invoke(cli, ["evaluate", best, "--split", "val", "--json"], env=mnist_env).stdout)
    assert val["accuracy"] == pytest.approx(smoke_run["val_accuracy"])
    train = json.loads(CliRunner().invoke(cli, ["evaluate", best, "--split", "train", "--json"], env=mnist_env).stdout)
    assert train["n"] == 4500


@NEEDS_MNIST
@pytest.mark.parametrize("args,code", [
    (["--min-accuracy", "0.5"], 0),
    (["--min-accuracy", "0.999"], 3),
    (["--min-digit-accuracy", "0.5"], 0),
    (["--min-digit-accuracy", "0.999"], 3),
])
def test_evaluate_gates(smoke_run, mnist_env, args, code):
    result = CliRunner().invoke(cli, ["evaluate", "--json", *args], env=mnist_env)
    assert result.exit_code == code, result.output
    json.loads(result.stdout)  # the report is printed either way
    if code == 3:
        assert "below --min" in result.stderr


def test_evaluate_without_a_model_is_a_clean_error(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate"], env={"BP_RUNS_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "bp train" in result.output
    assert result.output.startswith("Error: ") and "Traceback" not in result.output


@NEEDS_MNIST
def test_existing_run_dir_refused_exit_2(smoke_run, mnist_env):
    result = CliRunner().invoke(cli, ["train", "-c", "smoke", "--run-dir", smoke_run["run_dir"]],
                                env=mnist_env)
    assert result.exit_code == 2 and "--resume" in result.output


def test_existing_run_dir_is_refused_before_any_data_is_needed(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.npz").write_bytes(b"a run")
    env = {"BP_DATA_DIR": str(tmp_path / "no-data"), "BP_OFFLINE": "1", "BP_RUNS_DIR": str(tmp_path)}
    result = CliRunner().invoke(cli, ["train", "--run-dir", str(run_dir)], env=env)
    assert result.exit_code == 2 and "already holds a run" in result.output  # not "offline, missing"
    assert (run_dir / "last.npz").read_bytes() == b"a run"


@NEEDS_MNIST
def test_train_names_its_threads_and_blas_path_first_and_resume_reapplies_them(mnist_env, tmp_path):
    from bpcli.checkpoint import read_checkpoint
    from bpcli.fast import blas

    args = ["train", "--set", "data.limit=1500", "--set", "data.validation=500", "--hidden", "16",
            "--epochs", "1", "--run-dir", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, [*args, "--threads", "2"], env=mnist_env)
    assert result.exit_code == 0, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("run dir ") and ", 2 threads on worker processes, " in first and blas.describe() in first
    _, meta = read_checkpoint(str(tmp_path / "r" / "last.npz"), arrays=False)
    assert meta["threads"] == 2 and meta["blas"] == blas.record()
    resumed = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "r"), "--epochs", "2"], env=mnist_env)
    assert resumed.exit_code == 0, resumed.output
    assert ", 2 threads on worker processes, " in resumed.stderr.splitlines()[0] and "warning" not in resumed.stderr
    other = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path / "r"), "--epochs", "3", "--threads", "1"],
                               env=mnist_env)
    assert other.exit_code == 0, other.output
    assert "warning: this run was trained on 2 threads" in other.stderr


OTHER_KERNELS = ("Haswell", "Sandybridge", "SkylakeX")  # x86-64 OpenBLAS core types, one of which differs


@NEEDS_MNIST
def test_resuming_under_other_blas_kernels_warns_and_carries_on(mnist_env, tmp_path):
    """OpenBLAS's kernels chosen per process (OPENBLAS_CORETYPE, in the child's environment
    only): the checkpoint records the ones that ran, and a resume on others says so."""
    from bpcli.checkpoint import read_checkpoint

    def bp(args, env):
        proc = _bp([*args, "--quiet"], env, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, err
        return err, read_checkpoint(str(tmp_path / "r" / "last.npz"), arrays=False)[1]

    _, meta = bp(["train", "--set", "data.limit=1500", "--set", "data.validation=500", "--hidden", "16",
                  "--epochs", "1", "--run-dir", str(tmp_path / "r")], mnist_env)
    here = meta["blas"]["kernel"]
    if here not in OTHER_KERNELS:
        pytest.skip(f"OpenBLAS kernels {here!r}: not an x86-64 CPU whose kernels can be swapped")
    other = next(k for k in OTHER_KERNELS if k != here)
    err, meta = bp(["train", "--resume", str(tmp_path / "r"), "--epochs", "2"],
                   {**mnist_env, "OPENBLAS_CORETYPE": other})
    assert meta["epoch"] == 2
    if meta["blas"]["kernel"] != other:
        pytest.skip(f"this CPU does not run OpenBLAS's {other} kernels (it ran {meta['blas']['kernel']})")
    assert f"warning: this run was trained on OpenBLAS's {here} kernels, this process has {other}" in err
    err, meta = bp(["train", "--resume", str(tmp_path / "r"), "--epochs", "3"],
                   {**mnist_env, "OPENBLAS_CORETYPE": other})
    assert meta["epoch"] == 3 and "warning" not in err  # resumed where it last ran: nothing to say


@NEEDS_MNIST
def test_resume_with_other_flags_is_refused(smoke_run, mnist_env):
    result = CliRunner().invoke(cli, ["train", "--resume", smoke_run["run_dir"], "--lr", "0.5"], env=mnist_env)
    assert result.exit_code == 2 and "only --epochs" in result.output


def _bp(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "bpcli.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@NEEDS_MNIST
def test_sigint_saves_and_resume_matches_an_uninterrupted_run(mnist_env, tmp_path):
    args = ["train", "--set", "data.limit=12000", "--set", "data.validation=1000", "--hidden", "64",
            "--epochs", "4", "--quiet"]
    full = _bp([*args, "--run-dir", str(tmp_path / "full")], mnist_env)
    assert full.wait(timeout=120) == 0, full.stderr.read()

    cut = _bp([*args[:-1], "--run-dir", str(tmp_path / "cut")], mnist_env)
    for line in cut.stderr:  # interrupt once the first epoch is reported
        if line.startswith("epoch 1/4"):
            cut.send_signal(signal.SIGINT)
            break
    _, err = cut.communicate(timeout=120)
    assert cut.returncode == 130, err
    assert f"bp train --resume {tmp_path / 'cut'}" in err and "Traceback" not in err

    resumed = _bp(["train", "--resume", str(tmp_path / "cut"), "--quiet", "--json"], mnist_env)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert json.loads(out)["epochs"] == 4
    with np.load(tmp_path / "full" / "last.npz") as a, np.load(tmp_path / "cut" / "last.npz") as b:
        for key in ("W0", "b0", "W1", "b1"):
            assert np.array_equal(a[key], b[key]), key


@NEEDS_MNIST
def test_predict_classifies_pictures_of_digits_as_their_originals(smoke_run, mnist_env, tmp_path):
    """MNIST test digits turned into photos, scans and drawings get the original's label."""
    from test_image import BUILDERS, N_DIGITS

    from bpcli.checkpoint import load_model
    from bpcli.data import load_mnist

    data = load_mnist(mnist_env["BP_DATA_DIR"], offline=True)
    originals = data.test_images[:N_DIGITS]
    model = load_model(Path(smoke_run["run_dir"]) / "best.npz")
    P = model.predict_proba(originals)
    confident = [i for i in range(N_DIGITS) if P[i].max() > 0.9]
    assert len(confident) >= N_DIGITS // 2

    rng = np.random.default_rng(0)
    files, expected = [], []
    for kind, build in BUILDERS.items():
        for i in confident:
            folder = tmp_path / f"{kind}-{i}"
            folder.mkdir()
            files.append(str(build(originals[i].reshape(28, 28), rng, folder)))
            expected.append(int(P[i].argmax()))
    result = CliRunner().invoke(cli, ["predict", "--json", *files], env=mnist_env)
    assert result.exit_code == 0, result.output
    got = [r["digit"] for r in json.loads(result.stdout)]
    agree = np.mean(np.array(got) == np.array(expected))
    assert agree >= 0.97, [f for f, g, e in zip(files, got, expected) if g != e]


@NEEDS_MNIST
def test_predict_text_top_and_show(smoke_run, mnist_env, tmp_path):
    from PIL import Image

    from bpcli.data import load_mnist

    x = load_mnist(mnist_env["BP_DATA_DIR"], offline=True).test_images[0].reshape(28, 28)
    Image.fromarray(255 - x).resize((140, 140)).save(tmp_path / "seven.png")
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "seven.png"), "--top", "3", "--show"],
                                env=mnist_env)
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"{tmp_path / 'seven.png'}: 7 (") and first.count("%") == 3
    assert len(result.stdout.splitlines()) == 1 + 28
    assert result.stderr.startswith("model: ") and result.stderr.strip().endswith("latest)")


@NEEDS_MNIST
def test_predict_reports_good_images_and_fails_on_bad_ones(smoke_run, mnist_env, tmp_path):
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.pad(np.full((60, 12), 255, np.uint8), 40)).save(good)  # a "1"
    (tmp_path / "fake.png").write_bytes(b"not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    Image.new("L", (64, 64), 255).save(tmp_path / "blank.png")
    (tmp_path / "no-pictures").mkdir()  # (a folder means its pictures: this one has none)
    bad = [tmp_path / "fake.png", tmp_path / "empty.png", tmp_path / "blank.png", tmp_path / "missing.png",
           tmp_path / "no-pictures"]
    result = CliRunner().invoke(cli, ["predict", "--json", str(good), *map(str, bad)], env=mnist_env)
    assert result.exit_code == 1
    docs = json.loads(result.stdout)
    assert docs[0]["digit"] == 1 and set(docs[0]) == {"image", "digit", "label", "confidence", "probabilities",
                                                       "uncertain"}
    assert docs[0]["label"] == "1"
    assert len(docs[0]["probabilities"]) == 10 and abs(sum(docs[0]["probabilities"]) - 1) < 1e-4
    for doc, path in zip(docs[1:], bad):
        assert doc["digit"] is None and str(path) in doc["error"], doc
    assert "no digit found" in docs[3]["error"]
    text = CliRunner().invoke(cli, ["predict", str(good), *map(str, bad)], env=mnist_env)
    assert text.exit_code == 1
    assert text.stdout.startswith(f"{good}: 1 (")
    assert text.stderr.count("Error: ") == len(bad) and "Traceback" not in text.output


@NEEDS_MNIST
def test_predict_refuses_pipes_devices_loops_and_odd_names_one_line_each(smoke_run, mnist_env, tmp_path):
    """A real bp process (under a timeout: a FIFO must not block it) reports each bad
    image on one line, exits 1, and still classifies the good one."""
    from PIL import Image

    good = tmp_path / "good.png"
    Image.fromarray(np.pad(np.full((60, 12), 255, np.uint8), 40)).save(good)  # a "1"
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    (tmp_path / "two\nlines.png").write_bytes(b"not an image")
    bad = {str(tmp_path / "pipe.png"): "is a named pipe (FIFO)", "/dev/zero": "is a character device",
           str(tmp_path / "a.png"): "is a symbolic link that loops back on itself",
           str(tmp_path / "two\nlines.png"): "not an image Pillow can read"}
    env = dict(os.environ, **mnist_env)

    def bp(*args):
        return subprocess.run([sys.executable, "-m", "bpcli.cli", "predict", *args], env=env,
                              capture_output=True, text=True, timeout=120)

    result = bp("--json", str(good), *bad)
    assert result.returncode == 1, result.stderr
    docs = json.loads(result.stdout)
    assert docs[0]["digit"] == 1
    for doc, (path, what) in zip(docs[1:], bad.items()):
        assert doc["image"] == path and doc["digit"] is None
        assert what in doc["error"] and "\n" not in doc["error"], doc
    assert "two\\nlines.png" in docs[4]["error"]

    text = bp(str(good), *bad)
    assert text.returncode == 1 and text.stdout.startswith(f"{good}: 1 (")
    note, *lines = text.stderr.splitlines()
    assert note.startswith("model: ") and len(lines) == len(bad), text.stderr
    for line, (path, what) in zip(lines, bad.items()):
        assert line.startswith("Error: ") and path.replace("\n", "\\n") in line and what in line, line


# --- a checkpoint never decides where bp writes -------------------------------------

def _checkpoint_recording(path, data_dir):
    from bpcli.checkpoint import save_checkpoint

    Ws = [np.zeros((784, 8), np.float32), np.zeros((8, 10), np.float32)]
    bs = [np.zeros(8, np.float32), np.zeros(10, np.float32)]
    save_checkpoint(path, Ws, bs, {"config": {"data": {"dir": data_dir}, "model": {"hidden": [8]}},
                                   "sizes": [784, 8, 10]})


def _files(folder):
    return sorted(p.name for p in Path(folder).iterdir() if not p.name.startswith("."))


TEST_FILES = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@NEEDS_MNIST
def test_a_checkpoints_data_dir_is_never_created_nor_downloaded_into(tmp_path, monkeypatch, make_server):
    server = make_server()
    server.add_dir(real_mnist_folder())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("BP_DATA_DIR", raising=False)
    _checkpoint_recording(work / "m.npz", "../elsewhere")
    env = {"BP_MNIST_MIRROR": server.url, "BP_OFFLINE": ""}

    result = CliRunner().invoke(cli, ["evaluate", "m.npz", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "elsewhere").exists()
    assert _files(work / "data") == TEST_FILES  # ./data, and only what --split test needs
    assert {path for path, n in server.hits.items() if n} == {f"/{name}.gz" for name in TEST_FILES}

    result = CliRunner().invoke(cli, ["evaluate", "m.npz", "--data-dir", str(tmp_path / "flag")], env=env)
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "flag") == TEST_FILES
    result = CliRunner().invoke(cli, ["evaluate", "m.npz"], env={**env, "BP_DATA_DIR": str(tmp_path / "env")})
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "env") == TEST_FILES
    assert not (tmp_path / "elsewhere").exists()


@NEEDS_MNIST
def test_a_checkpoints_data_dir_is_read_when_it_holds_verified_files(tmp_path, monkeypatch, make_server):
    server = make_server()  # serves nothing: any download would fail
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("BP_DATA_DIR", raising=False)
    from bpcli.download import ensure_mnist

    ensure_mnist(tmp_path / "recorded", mirrors=[str(real_mnist_folder())], progress=False)
    before = sorted(os.listdir(tmp_path / "recorded"))
    _checkpoint_recording(work / "m.npz", str(tmp_path / "recorded"))
    result = CliRunner().invoke(cli, ["evaluate", "m.npz", "--split", "train", "--json"],
                                env={"BP_MNIST_MIRROR": server.url, "BP_OFFLINE": ""})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 55000
    assert not (work / "data").exists() and not any(server.hits.values())
    assert sorted(os.listdir(tmp_path / "recorded")) == before  # not even a lock file


@NEEDS_MNIST
def test_resuming_a_tampered_run_is_one_error_line(smoke_run, mnist_env, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run["run_dir"], run_dir)
    with np.load(run_dir / "last.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    meta["epoch"] = str(meta["epoch"])
    with open(run_dir / "last.npz", "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    result = CliRunner().invoke(cli, ["train", "--resume", str(run_dir), "--quiet"], env=mnist_env)
    assert result.exit_code == 1
    assert result.output.startswith("Error: checkpoint") and "'epoch'" in result.output
    assert result.output.count("\n") == 1


# ---------------------------------------------------------------------------
# Numeric flags and configs as hostile input (issue 12)

def _offline_env(tmp_path):
    """No model, no data, no network: whatever a command does first with them shows."""
    return {"BP_RUNS_DIR": str(tmp_path / "runs"), "BP_DATA_DIR": str(tmp_path / "data"), "BP_OFFLINE": "1"}


@pytest.mark.parametrize("args", [
    ["train", "--lr", "nan"],
    ["train", "--lr", "inf"],
    ["evaluate", "--min-accuracy", "nan"],
    ["evaluate", "--min-digit-accuracy", "nan"],
    ["evaluate", "--min-accuracy", "-inf"],
    ["gradcheck", "--tolerance", "nan"],
    ["gradcheck", "--tolerance", "inf"],
    ["explain", "--lr", "nan"],
    ["explain", "--lr", "inf"],
])
def test_nan_and_inf_in_float_flags_are_usage_errors(tmp_path, args):
    result = CliRunner().invoke(cli, args, env=_offline_env(tmp_path))
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[1]}'" in result.output and "not a finite number" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_float_flags_still_take_numbers_and_say_what_is_wrong(tmp_path):
    env = _offline_env(tmp_path)
    ok = CliRunner().invoke(cli, ["gradcheck", "--tolerance", "1e-4"], env=env)
    assert ok.exit_code == 0, ok.output
    negative = CliRunner().invoke(cli, ["gradcheck", "--tolerance", "-1"], env=env)
    assert negative.exit_code == 2 and "x>=0" in negative.output
    word = CliRunner().invoke(cli, ["evaluate", "--min-accuracy", "x" * 10_000], env=env)
    assert word.exit_code == 2 and "is not a number" in word.output and len(word.output) < 400


def test_a_huge_batch_size_is_refused_before_a_run_dir_or_data(tmp_path):
    env = _offline_env(tmp_path)
    result = CliRunner().invoke(cli, ["train", "--batch-size", "1000000000"], env=env)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "'train.batch_size' (flag --batch-size)" in lines[0]
    assert "60,000 training images" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_validation_not_below_limit_is_refused_before_a_run_dir_or_data(tmp_path):
    env = _offline_env(tmp_path)
    result = CliRunner().invoke(cli, ["train", "--set", "data.limit=100", "--set", "data.validation=100"], env=env)
    assert result.exit_code == 2, result.output
    assert "data.validation" in result.output and "data.limit 100" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_fifo_given_to_train_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    env = _offline_env(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "bpcli.cli", "train", "-c", str(fifo)], env={**os.environ, **env},
                          cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "named pipe" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


# --- the paths a user walks (issue 13) ------------------------------------------------

@pytest.mark.parametrize("key,meant", [("train.learning_rate", "train.lr"), ("eta", "train.lr"),
                                       ("model.layers", "model.hidden"), ("train.l2", "train.weight_decay"),
                                       ("n_epochs", "train.epochs"), ("train.lrr", "train.lr")])
def test_unknown_keys_are_suggested_by_meaning_too(key, meant):
    result = CliRunner().invoke(cli, ["config", "--set", f"{key}=1"])
    assert result.exit_code == 2 and f"did you mean '{meant}'?" in result.output, result.output


def test_every_synonym_names_a_real_key():
    from bpcli.config import RULES, SYNONYMS

    assert set(SYNONYMS.values()) <= set(RULES)


def test_config_previews_trains_named_flags():
    import yaml

    result = CliRunner().invoke(cli, ["config", "--epochs", "3", "--lr", "0.2", "--hidden", "32,16",
                                      "--batch-size", "64", "--seed", "7", "--set", "train.lr=0.5"])
    assert result.exit_code == 0, result.output
    values = yaml.safe_load(result.stdout)
    assert values["train"]["epochs"] == 3 and values["train"]["lr"] == 0.2  # the flag beats --set
    assert values["model"]["hidden"] == [32, 16] and values["train"]["batch_size"] == 64 and values["seed"] == 7


def test_gradcheck_json():
    result = CliRunner().invoke(cli, ["gradcheck", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["max_error"] <= doc["tolerance"] == 1e-6
    assert [layer["layer"] for layer in doc["layers"]] == [1, 2, 3]


def test_gradcheck_json_still_fails_on_a_wrong_gradient(monkeypatch):
    import bpcli.network as network

    monkeypatch.setitem(network.ACTIVATIONS, "relu", (network.relu, lambda a: np.ones_like(a)))
    result = CliRunner().invoke(cli, ["gradcheck", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["ok"] is False


@NEEDS_MNIST
def test_a_run_at_chance_level_warns_loudly(mnist_env, tmp_path):
    config = Path(__file__).parents[1] / "configs" / "smoke.yaml"
    result = CliRunner().invoke(cli, ["train", "-c", str(config), "--lr", "1e6", "--quiet", "--json",
                                      "--run-dir", str(tmp_path / "r")], env=mnist_env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test_accuracy"] < 0.2
    assert "Warning: test accuracy" in result.stderr and "chance level" in result.stderr


@NEEDS_MNIST
def test_init_fine_tunes_from_a_model_and_records_it(smoke_run, mnist_env, tmp_path):
    config = str(Path(__file__).parents[1] / "configs" / "smoke.yaml")
    base = smoke_run["run_dir"]
    result = CliRunner().invoke(cli, ["train", "-c", config, "--init", base, "--epochs", "1", "--lr", "0.01",
                                      "--run-dir", str(tmp_path / "tuned"), "--quiet", "--json"], env=mnist_env)
    assert result.exit_code == 0, result.output
    tuned = json.loads(result.stdout)
    assert tuned["test_accuracy"] >= smoke_run["test_accuracy"] - 0.01  # it started from a trained net
    from bpcli.checkpoint import read_checkpoint

    meta = read_checkpoint(tmp_path / "tuned" / "best.npz", arrays=False)[1]
    assert meta["init"]["checkpoint"] == str((Path(base) / "best.npz").resolve())
    assert json.loads((tmp_path / "tuned" / "result.json").read_text())["init"] == meta["init"]
    other = CliRunner().invoke(cli, ["train", "-c", config, "--hidden", "32", "--init", base, "--quiet"],
                               env=mnist_env)
    assert other.exit_code == 2 and "784-64-10 relu network" in other.output


@NEEDS_MNIST
def test_resuming_a_finished_run_says_how_to_extend_it_in_a_command_that_runs(smoke_run, mnist_env, tmp_path):
    import re
    import shlex
    import shutil

    run = tmp_path / "my run"  # a space: the suggested command must quote it
    shutil.copytree(smoke_run["run_dir"], run, ignore=shutil.ignore_patterns(".lock"))
    result = CliRunner().invoke(cli, ["train", "--resume", str(run)], env=mnist_env)
    assert result.exit_code == 2 and "nothing to resume" in result.output and "--init" in result.output
    suggested = shlex.split(re.search(r"extend it with (bp train .*?) \(", result.output).group(1))
    assert suggested[:3] == ["bp", "train", "--resume"] and suggested[3] == str(run)
    extended = CliRunner().invoke(cli, [*suggested[1:], "--quiet"], env=mnist_env)
    assert extended.exit_code == 0, extended.output


def test_a_huge_value_in_a_click_option_is_cut():
    result = CliRunner().invoke(cli, ["train", "--epochs", "x" * 5000])
    assert result.exit_code == 2 and len(result.output) < 600 and "…" in result.output


def test_model_is_a_run_dir_or_a_checkpoint_everywhere(smoke_run, mnist_env, tmp_path):
    run_dir = smoke_run["run_dir"]
    by_dir = CliRunner().invoke(cli, ["evaluate", run_dir, "--json"], env=mnist_env)
    by_file = CliRunner().invoke(cli, ["evaluate", str(Path(run_dir) / "best.npz"), "--json"], env=mnist_env)
    assert by_dir.exit_code == 0, by_dir.output
    assert json.loads(by_dir.stdout)["accuracy"] == json.loads(by_file.stdout)["accuracy"]
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "last.npz").write_bytes(b"x")
    result = CliRunner().invoke(cli, ["evaluate", str(empty)], env=mnist_env)
    assert result.exit_code == 1 and "has no best.npz yet" in result.output and "last.npz" in result.output


def test_shell_completion_completes_set_with_config_keys():
    env = {**os.environ, "_BP_COMPLETE": "bash_complete", "COMP_WORDS": "bp train --set train.l", "COMP_CWORD": "3"}
    out = subprocess.run([sys.executable, "-m", "bpcli.cli"], env=env, capture_output=True, text=True).stdout
    assert set(out.split()) == {"plain,train.lr=", "plain,train.label_smoothing="}
    env.update(_BP_COMPLETE="bash_source")
    script = subprocess.run([sys.executable, "-m", "bpcli.cli"], env=env, capture_output=True, text=True).stdout
    assert "_bp_completion" in script and "complete" in script


@NEEDS_MNIST
def test_predict_takes_a_folder_and_standard_input(smoke_run, mnist_env, tmp_path):
    from PIL import Image

    folder = tmp_path / "digits"
    folder.mkdir()
    one = np.pad(np.full((60, 12), 255, np.uint8), 40)
    for name in ("b.png", "a.jpg"):
        Image.fromarray(one).save(folder / name)
    (folder / "notes.txt").write_text("not a picture")
    (tmp_path / "empty").mkdir()
    model = ["--model", smoke_run["run_dir"]]
    result = CliRunner().invoke(cli, ["predict", str(folder), "--json", *model], env=mnist_env)
    assert result.exit_code == 0, result.output
    assert [d["image"] for d in json.loads(result.stdout)] == [str(folder / "a.jpg"), str(folder / "b.png")]
    piped = CliRunner().invoke(cli, ["predict", "-", "--json", *model], env=mnist_env,
                               input=(folder / "b.png").read_bytes())
    assert piped.exit_code == 0, piped.output
    doc, = json.loads(piped.stdout)
    assert doc["image"] == "-" and doc["digit"] == json.loads(result.stdout)[1]["digit"]
    empty = CliRunner().invoke(cli, ["predict", str(tmp_path / "empty"), "-", "--json", *model], env=mnist_env,
                               input=b"")
    assert empty.exit_code == 1
    errors = [d["error"] for d in json.loads(empty.stdout)]
    assert "holds no pictures" in errors[0] and "no image on standard input" in errors[1]


@NEEDS_MNIST
def test_plot_takes_a_checkpoint_or_latest(smoke_run, mnist_env, tmp_path):
    best = str(Path(smoke_run["run_dir"]) / "best.npz")
    result = CliRunner().invoke(cli, ["plot", best, "--out", str(tmp_path / "a")], env=mnist_env)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "learning_curves.png").is_file()
    result = CliRunner().invoke(cli, ["plot", "--out", str(tmp_path / "b")], env=mnist_env)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("model: ") and "latest)" in result.stderr
    assert (tmp_path / "b" / "confusion.png").is_file()


@NEEDS_MNIST
def test_resume_given_a_best_npz_means_its_run(mnist_env, tmp_path):
    config = str(Path(__file__).parents[1] / "configs" / "smoke.yaml")
    run_dir = tmp_path / "r"
    first = CliRunner().invoke(cli, ["train", "-c", config, "--epochs", "1", "--run-dir", str(run_dir), "--quiet"],
                               env=mnist_env)
    assert first.exit_code == 0, first.output
    result = CliRunner().invoke(cli, ["train", "--resume", str(run_dir / "best.npz"), "--epochs", "2", "--quiet",
                                      "--json"], env=mnist_env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 2


def test_hidden_with_an_empty_item_is_a_usage_error():
    assert CliRunner().invoke(cli, ["config", "--hidden", "1,,2"]).exit_code == 2
    result = CliRunner().invoke(cli, ["config", "--hidden", ""])  # no hidden layer: logistic regression
    assert result.exit_code == 0 and "hidden: []" in result.output


def test_a_diverged_runs_suggested_command_runs_as_written(mnist_env, tmp_path):
    import re
    import shlex

    run = tmp_path / "wild"
    result = CliRunner().invoke(cli, ["train", "-c", "smoke", "--lr", "1e30", "--run-dir", str(run), "--quiet"],
                                env=mnist_env)
    assert result.exit_code == 1, result.output
    suggested = re.search(r"e\.g\. (bp train .*?); ", result.stderr).group(1)
    assert "e+" not in suggested and suggested.endswith("--lr 0.1")
    again = CliRunner().invoke(cli, shlex.split(suggested)[1:] + ["--quiet"], env=mnist_env)
    assert again.exit_code == 0, again.output


def test_a_named_flag_is_checked_by_its_keys_one_rule():
    """--lr is parsed by click but judged by train.lr's rule in config.KEYS, as --set is."""
    for args in (["--lr", "0"], ["--set", "train.lr=0"]):
        result = CliRunner().invoke(cli, ["config", *args])
        assert result.exit_code == 2, result.output
        assert "config key 'train.lr'" in result.output and "must be > 0" in result.output
