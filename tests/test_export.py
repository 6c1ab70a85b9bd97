"""bp export --onnx: the graph equals bp's forward pass, the file is verified, checked and written whole."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bpcli.checkpoint import load_model, save_checkpoint
from bpcli.cli import cli
from synthetic import write_model

onnx = pytest.importorskip("onnx", reason="the export extra is not installed: pip install -e '.[export]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the test extra) is not installed")

from bpcli import export  # noqa: E402  (needs onnx only inside its functions; kept after the skips)

ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu"]
OUTPUTS = [("softmax", "cross_entropy"), ("sigmoid", "mse")]


def pixels(n, seed=1):
    """n MNIST-like inputs: sparse ink of random levels, as float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    X = np.where(rng.random((n, 784)) < 0.2, rng.random((n, 784)), 0.0)
    return X.astype(np.float32)


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture
def no_mnist(tmp_path, monkeypatch, clean_bp_env):
    """A data dir without MNIST, the built-in (remote) mirrors: export verifies on its
    random sample, without a download and without creating the data dir."""
    return str(tmp_path / "empty-data")


@pytest.mark.parametrize("output,loss", OUTPUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_exported_graph_computes_what_bp_computes(tmp_path, no_mnist, activation, output, loss):
    ckpt = write_model(tmp_path / "best.npz", activation, output, loss)
    model = load_model(ckpt)
    out = tmp_path / "model.onnx"
    report = export.export_onnx(model, str(ckpt), str(out), data_dir=no_mnist)
    assert report["verified"]["images"].startswith("2,000 fixed random images")
    X = pixels(257)  # not a multiple of anything: the batch dimension is dynamic
    logits, P = session(out).run(None, {"pixels": X})
    expected = model.predict_proba(X)
    assert P.shape == logits.shape == (257, 10)
    np.testing.assert_allclose(P, expected, atol=1e-5, rtol=0)
    assert (P.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    # logits are the output layer's z: the output function applied to them gives bp's scores
    raw = 1 / (1 + np.exp(-logits.astype(np.float64))) if output == "sigmoid" else np.exp(logits)
    np.testing.assert_allclose(raw / raw.sum(axis=1, keepdims=True), expected, atol=1e-5)
    one, = session(out).run(["probabilities"], {"pixels": X[:1]})
    np.testing.assert_allclose(one, expected[:1], atol=1e-5)


def test_graph_declares_its_contract(tmp_path, no_mnist):
    ckpt = write_model(tmp_path / "best.npz", "leaky_relu")
    out = tmp_path / "m.onnx"
    export.export_onnx(load_model(ckpt), str(ckpt), str(out), data_dir=no_mnist)
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 13
    (inp,) = proto.graph.input
    assert inp.name == "pixels" and inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value and dims[1].dim_value == 784
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    for o in proto.graph.output:
        assert [d.dim_value for d in o.type.tensor_type.shape.dim][1:] == [10]
    leaky = [n for n in proto.graph.node if n.op_type == "LeakyRelu"]
    assert len(leaky) == 2 and all(abs(a.f - 0.01) < 1e-9 for n in leaky for a in n.attribute)
    meta = {p.key: p.value for p in proto.metadata_props}
    import bpcli

    assert meta["bp_version"] == bpcli.__version__
    assert meta["network"] == "784-16-8-10 leaky_relu, softmax + cross_entropy"
    assert meta["test_accuracy"] == "unknown" and "not recorded" in meta["test_accuracy_source"]
    assert "[0, 1]" in meta["input"] and "28x28" in meta["input"]
    assert "centre of mass" in meta["preparation"] and "/ 255" in meta["preparation"]
    assert "softmax" in meta["outputs"]


def test_recorded_test_accuracy_comes_from_the_finished_run(tmp_path, no_mnist):
    run = tmp_path / "run"
    run.mkdir()
    ckpt = write_model(run / "best.npz")
    (run / "result.json").write_text(json.dumps({"state": "finished", "test_accuracy": 0.9876}))
    out = tmp_path / "m.onnx"
    report = export.export_onnx(load_model(ckpt), str(ckpt), str(out), data_dir=no_mnist)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["test_accuracy"] == "0.9876" and "result.json" in meta["test_accuracy_source"]
    assert report["test_accuracy"] == 0.9876
    # last.npz is not the model result.json scored
    last = write_model(run / "last.npz")
    export.export_onnx(load_model(last), str(last), str(out), force=True, data_dir=no_mnist)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["test_accuracy"] == "unknown"


def test_a_graph_that_disagrees_with_bp_is_never_written(tmp_path, no_mnist, monkeypatch):
    ckpt = write_model(tmp_path / "best.npz", "tanh")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    real = export.ONNX_ACTIVATIONS
    monkeypatch.setattr(export, "ONNX_ACTIVATIONS", {**real, "tanh": "Sigmoid"})  # a wrong graph
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--onnx", str(out), "--force",
                                      "--data-dir", no_mnist])
    assert result.exit_code == 1, result.output
    assert "onnxruntime disagrees with bp" in result.stderr and "nothing was written" in result.stderr
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz", "m.onnx"]  # no temp file left


def test_a_graph_failing_the_checker_is_never_written(tmp_path, no_mnist, monkeypatch):
    ckpt = write_model(tmp_path / "best.npz")
    out = tmp_path / "m.onnx"
    build = export.build_graph

    def broken(model, metadata):
        proto = build(model, metadata)
        proto.graph.node[0].input[1] = "no_such_tensor"
        return proto

    monkeypatch.setattr(export, "build_graph", broken)
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--onnx", str(out), "--data-dir", no_mnist])
    assert result.exit_code == 1, result.output
    assert "fails onnx's checker" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz"]


def test_cli_export_refuses_to_overwrite_without_force(tmp_path, no_mnist):
    ckpt = write_model(tmp_path / "best.npz")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    args = ["export", str(ckpt), "--onnx", str(out), "--data-dir", no_mnist]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert out.read_bytes() == b"keep me"
    result = CliRunner().invoke(cli, args + ["--force"])
    assert result.exit_code == 0, result.output
    assert onnx.load(str(out)).graph.input[0].name == "pixels"
    assert "verified: onnxruntime" in result.stdout and "2,000 fixed random images" in result.stdout


def test_cli_export_usage_errors(tmp_path, no_mnist):
    ckpt = write_model(tmp_path / "best.npz")
    for args in ([str(ckpt)], [str(ckpt), "--onnx", str(tmp_path / "a.onnx"), "--web", str(tmp_path / "w")]):
        result = CliRunner().invoke(cli, ["export", *args])
        assert result.exit_code == 2, result.output
        assert "exactly one of --onnx FILE or --web DIR" in result.stderr
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--onnx", str(tmp_path)])  # a folder
    assert result.exit_code == 2 and "is a folder" in result.stderr
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--onnx", str(tmp_path / "nowhere" / "m.onnx")])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    assert not os.path.exists(tmp_path / "a.onnx")


def test_cli_export_of_a_bad_checkpoint_is_one_clean_line(tmp_path):
    bad = tmp_path / "best.npz"
    bad.write_text("not a checkpoint")
    result = CliRunner().invoke(cli, ["export", str(bad), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: checkpoint") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "not found" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_without_onnx_export_says_how_to_install_it(tmp_path):
    ckpt = write_model(tmp_path / "best.npz")
    out = tmp_path / "m.onnx"
    code = ("import sys; sys.modules['onnx'] = None; from bpcli.cli import main; "
            f"sys.argv = ['bp', 'export', {str(ckpt)!r}, '--onnx', {str(out)!r}]; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == f"Error: {export.INSTALL_HINT}"
    assert "pip install -e '.[export]'" in proc.stderr
    assert not out.exists()


def test_without_onnxruntime_export_says_it_did_not_verify(tmp_path, no_mnist, monkeypatch):
    ckpt = write_model(tmp_path / "best.npz")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx"),
                                      "--data-dir", no_mnist])
    assert result.exit_code == 0, result.output
    assert "not verified: onnxruntime is not installed" in result.stdout
    assert "checked: onnx.checker" in result.stdout


def test_help_shows_export_without_importing_onnx():
    code = "import sys; from bpcli.cli import cli; print('onnx' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    result = CliRunner().invoke(cli, ["export", "--help"])
    assert result.exit_code == 0 and "--onnx FILE" in result.output and "--web DIR" in result.output


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """bp train -c configs/smoke.yaml on real MNIST, once for the module: (env, run dir)."""
    from synthetic import real_mnist_folder

    folder = real_mnist_folder() or pytest.skip("real MNIST not found")
    env = {"BP_DATA_DIR": str(tmp_path_factory.mktemp("data")), "BP_RUNS_DIR": str(tmp_path_factory.mktemp("runs")),
           "BP_MNIST_MIRROR": str(folder), "BP_OFFLINE": ""}
    config = Path(__file__).parents[1] / "configs" / "smoke.yaml"
    result = CliRunner().invoke(cli, ["train", "-c", str(config), "--json", "--quiet"], env=env)
    assert result.exit_code == 0, result.output
    return env, json.loads(result.stdout)["run_dir"]


def test_export_of_a_trained_model_equals_bp_on_the_10000_test_images(trained_run, tmp_path):
    from bpcli.data import load_mnist
    from bpcli.metrics import to_float

    env, run_dir = trained_run
    out = tmp_path / "digits.onnx"
    result = CliRunner().invoke(cli, ["export", run_dir, "--onnx", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "for all 10,000 MNIST test images" in result.stdout
    evaluated = CliRunner().invoke(cli, ["evaluate", run_dir, "--json"], env=env)
    accuracy = json.loads(evaluated.stdout)["accuracy"]
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["test_accuracy"] == f"{accuracy:.4f}" and "measured" in meta["test_accuracy_source"]

    data = load_mnist(env["BP_DATA_DIR"], offline=True, progress=False)
    model = load_model(os.path.join(run_dir, "best.npz"))
    _, P = session(out).run(None, {"pixels": to_float(data.test_images)})
    expected = model.predict_proba(data.test_images)
    assert (P.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert np.abs(P - expected).max() <= 1e-5
    assert float(np.mean(P.argmax(axis=1) == data.test_labels)) == accuracy


@pytest.mark.parametrize("kind", ["link to a file", "link to a terminal's stdout", "dangling link", "fifo"])
def test_cli_export_never_replaces_a_link_or_a_fifo_even_with_force(tmp_path, no_mnist, kind):
    """`--onnx /dev/stdout --force` (a link) as root replaced the link with a regular file."""
    ckpt = write_model(tmp_path / "best.npz")
    out = tmp_path / "m.onnx"
    kept = tmp_path / "kept.onnx"
    kept.write_bytes(b"keep me")
    if kind == "fifo":
        os.mkfifo(out)
    else:
        out.symlink_to({"link to a file": kept, "link to a terminal's stdout": Path("/proc/self/fd/1"),
                        "dangling link": tmp_path / "nowhere"}[kind])
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--onnx", str(out), "--force", "--data-dir", no_mnist])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert ("symbolic link" if kind != "fifo" else "named pipe") in result.stderr
    assert out.is_symlink() if kind != "fifo" else out.is_fifo()
    assert kept.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz", "kept.onnx", "m.onnx"]


def test_two_digits_tied_within_the_tolerance_are_no_disagreement(tmp_path, no_mnist):
    """Digits 3 and 5 with weights equal to within float32 rounding: onnxruntime's sums in
    another order pick either, as bp's own could; a real disagreement is still refused
    (test_a_graph_that_disagrees_with_bp_is_never_written)."""
    ckpt = write_model(tmp_path / "best.npz", hidden=(64,))
    model = load_model(ckpt)
    W, b = model.Ws[-1] * 3, np.zeros_like(model.bs[-1])
    W[:, 5] = W[:, 3] * (1 + 1e-7 * np.random.default_rng(0).standard_normal(64)).astype(np.float32)
    save_checkpoint(ckpt, model.Ws[:-1] + [W], model.bs[:-1] + [b], model.meta)
    model = load_model(ckpt)
    X, _, _ = export.verification_images(model, no_mnist)
    P = model.predict_proba(X)
    assert np.isin(P.argmax(axis=1), (3, 5)).sum() > 20  # the tied pair is the answer for many images
    report = export.export_onnx(model, str(ckpt), str(tmp_path / "m.onnx"), data_dir=no_mnist)
    assert report["verified"]["max_difference"] <= export.TOLERANCE
    Q = session(tmp_path / "m.onnx").run(["probabilities"], {"pixels": X.astype(np.float32) / 255})[0]
    assert np.abs(Q - P).max() <= export.TOLERANCE


def test_a_model_whose_outputs_overflow_is_refused_like_evaluate_refuses_it(tmp_path, no_mnist):
    ckpt = write_model(tmp_path / "best.npz")
    model = load_model(ckpt)
    save_checkpoint(ckpt, [W * 1e18 for W in model.Ws], model.bs, model.meta)  # finite, but z overflows
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--onnx", str(tmp_path / "m.onnx"),
                                      "--data-dir", no_mnist])
    assert result.exit_code == 1, result.output
    assert "are not numbers: the model has diverged" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.npz"]
