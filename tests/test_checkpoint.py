"""Checkpoints: round trip, self-description, and refusal of anything bp did not write."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bpcli.checkpoint import FORMAT_VERSION, load_model, save_checkpoint
from bpcli.errors import CheckpointError
from bpcli.network import Spec, init_params


def meta_for(sizes, **extra):
    model = {"hidden": sizes[1:-1], "activation": "relu", "output": "softmax", "loss": "cross_entropy"}
    return {"config": {"model": model}, "sizes": sizes, "epoch": 1, **extra}


@pytest.fixture
def ckpt(tmp_path):
    spec = Spec([784, 8, 10])
    Ws, bs = init_params(spec, np.random.default_rng(0))
    path = tmp_path / "m.npz"
    save_checkpoint(path, Ws, bs, meta_for(spec.sizes), {"v0": np.ones(3, np.float32)})
    return path, Ws, bs


def test_round_trip_rebuilds_the_model(ckpt):
    path, Ws, bs = ckpt
    model = load_model(path)
    assert model.spec.sizes == [784, 8, 10] and model.spec.activation == "relu"
    for a, b in zip(model.Ws + model.bs, Ws + bs):
        assert np.array_equal(a, b) and a.dtype == np.float32
    assert model.meta["format_version"] == FORMAT_VERSION and "bp_version" in model.meta
    X = np.random.default_rng(1).random((5, 784), dtype=np.float32)
    P = model.predict_proba(X)
    assert P.shape == (5, 10) and np.allclose(P.sum(axis=1), 1, atol=1e-5)


def test_a_sigmoid_models_scores_are_normalised_to_probabilities(tmp_path):
    from bpcli.metrics import predict

    spec = Spec([784, 8, 10], "sigmoid", "sigmoid", "mse")
    Ws, bs = init_params(spec, np.random.default_rng(0), "normal")
    meta = meta_for(spec.sizes)
    meta["config"]["model"].update(activation="sigmoid", output="sigmoid", loss="mse")
    save_checkpoint(tmp_path / "s.npz", Ws, bs, meta)
    model = load_model(tmp_path / "s.npz")
    X = np.random.default_rng(1).integers(0, 256, (5, 784), dtype=np.uint8)
    scores, P = predict(Ws, bs, spec, X), model.predict_proba(X)
    assert not np.allclose(scores.sum(axis=1), 1, atol=1e-3)  # independent sigmoids do not sum to 1
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(P, scores / scores.sum(axis=1, keepdims=True), rtol=1e-5)


def test_metadata_alone_can_be_read(ckpt):
    from bpcli.checkpoint import read_checkpoint

    arrays, meta = read_checkpoint(ckpt[0], arrays=False)
    assert arrays == {} and meta == read_checkpoint(ckpt[0])[1]


def test_plain_numpy_reads_it_without_pickle(ckpt):
    with np.load(ckpt[0], allow_pickle=False) as npz:
        assert {"W0", "b0", "W1", "b1", "opt.v0", "meta"} <= set(npz.files)
        meta = json.loads(npz["meta"].tobytes())
    assert meta["sizes"] == [784, 8, 10]


def test_save_is_atomic_and_leaves_no_temp_files(ckpt, monkeypatch):
    path, Ws, bs = ckpt
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the user hits Ctrl-C in the middle of the write

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, Ws, bs, meta_for([784, 8, 10]))
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["m.npz"]


def test_kill_9_during_a_write_leaves_the_previous_checkpoint(ckpt, tmp_path):
    """A writer killed mid-file (SIGKILL: no cleanup runs) never harms the final name."""
    path, _, _ = ckpt
    before = path.read_bytes()
    code = f"""
import os, signal, numpy as np
from bpcli.checkpoint import save_checkpoint
real = np.savez
def slow(f, **arrays):
    f.write(b"PK partial")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
np.savez = slow
save_checkpoint({str(path)!r}, [np.zeros((784, 10), np.float32)], [np.zeros(10, np.float32)], {{}})
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    assert path.read_bytes() == before
    load_model(path)  # still loads


def write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def bp_meta(**overrides):
    meta = {"format": "bp-checkpoint", "format_version": FORMAT_VERSION, **meta_for([784, 8, 10])}
    meta.update(overrides)
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


def good_arrays():
    return {"W0": np.zeros((784, 8), np.float32), "b0": np.zeros(8, np.float32),
            "W1": np.zeros((8, 10), np.float32), "b1": np.zeros(10, np.float32)}


class Boom:
    """Unpickling this would run code: the test proves it never happens."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def make_pickle(path):
    with open(path, "wb") as f:
        np.savez(f, W0=np.array([Boom()], dtype=object), meta=bp_meta())


BAD = {
    "missing": (lambda p: None, "not found"),
    "directory": (lambda p: os.mkdir(p), "is a folder"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "not zip": (lambda p: p.write_bytes(b"hello, I am text"), "not an .npz archive"),
    "npy not npz": (lambda p: np.save(open(p, "wb"), np.zeros(3)), "not an .npz archive"),
    "raw pickle": (lambda p: p.write_bytes(__import__("pickle").dumps(Boom())), "not an .npz archive"),
    "truncated": (lambda p: p.write_bytes((p.parent / "good.npz").read_bytes()[:300]), "unreadable or truncated"),
    "pickle": (make_pickle, "pickled objects"),
    "no meta": (lambda p: write_npz(p, **good_arrays()), "no bp metadata"),
    "meta not json": (lambda p: write_npz(p, meta=np.frombuffer(b"{nope", np.uint8), **good_arrays()),
                      "corrupt metadata"),
    "foreign format": (lambda p: write_npz(p, meta=bp_meta(format="keras"), **good_arrays()),
                       "not written by bp"),
    "other version": (lambda p: write_npz(p, meta=bp_meta(format_version=99), **good_arrays()),
                      "format version 99"),
    "missing weights": (lambda p: write_npz(p, meta=bp_meta(), W0=np.zeros((784, 8), np.float32)),
                        "lacks the weights of layer 1"),
    "wrong shape": (lambda p: write_npz(p, meta=bp_meta(), **{**good_arrays(), "W1": np.zeros((9, 10))}),
                    "inconsistent"),
    "integer weights": (lambda p: write_npz(p, meta=bp_meta(),
                                            **{**good_arrays(), "W1": np.zeros((8, 10), np.int64)}),
                        "int64 values, not float32"),
    "no sizes": (lambda p: write_npz(p, meta=bp_meta(sizes=None), **good_arrays()), "incomplete"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoints_are_refused_cleanly(case, tmp_path, monkeypatch, ckpt):
    monkeypatch.chdir(tmp_path)
    os.replace(ckpt[0], tmp_path / "good.npz")
    path = tmp_path / "bad.npz"
    make, needle = BAD[case]
    make(path)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_the_pickle_payload_would_run_if_unpickled(tmp_path, monkeypatch):
    # what the refusals below guard against is real: loading with pickles allowed runs it
    monkeypatch.chdir(tmp_path)
    make_pickle(tmp_path / "evil.npz")
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as f:
        f["W0"]
    assert (tmp_path / "PWNED").exists()


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from bpcli.cli import cli

    monkeypatch.chdir(tmp_path)  # where the payload would write PWNED
    make_pickle(tmp_path / "evil.npz")
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "evil.npz")])
    assert result.exit_code == 1
    assert result.output.startswith("Error: checkpoint") and result.output.count("\n") == 1
    assert not (tmp_path / "PWNED").exists()


# --- a checkpoint is untrusted input ------------------------------------------------

def meta_doc(**overrides):
    """A bp checkpoint's metadata as a dict (784-8-10), with ``overrides`` applied."""
    return {"format": "bp-checkpoint", "format_version": FORMAT_VERSION, **meta_for([784, 8, 10]), **overrides}


def with_model(**model):
    doc = meta_doc()
    doc["config"]["model"].update(model)
    return doc


def forge(path, meta, **arrays):
    """An .npz bp would recognise: ``meta`` (a dict, or the JSON text itself) plus ``arrays``."""
    text = meta if isinstance(meta, str) else json.dumps(meta)
    write_npz(path, meta=np.frombuffer(text.encode(), np.uint8), **arrays)


def npy_header(shape, descr="<f4"):
    """The bytes of a version 1.0 .npy header declaring ``shape`` and ``descr``, no data."""
    import io

    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return f.getvalue()  # the magic string included


def npz_with(path, members):
    """A zip of raw ``{member name: bytes}``: what np.savez writes, with nothing checked."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def npy_bytes(arr):
    import io

    f = io.BytesIO()
    np.save(f, arr)
    return f.getvalue()


def good_members(meta=None):
    members = {"meta.npy": npy_bytes(np.frombuffer(json.dumps(meta or meta_doc()).encode(), np.uint8))}
    members.update({f"{k}.npy": npy_bytes(v) for k, v in good_arrays().items()})
    return members


DEEP = 100_000

FORGED = {
    "unknown activation": (lambda p: forge(p, with_model(activation="swish"), **good_arrays()),
                           "model.activation"),
    "unknown loss": (lambda p: forge(p, with_model(loss="hinge"), **good_arrays()), "model.loss"),
    "hidden of the wrong type": (lambda p: forge(p, with_model(hidden="eight"), **good_arrays()),
                                 "model.hidden"),
    "lr of the wrong type": (lambda p: forge(p, {**meta_doc(), "config": {**meta_doc()["config"],
                                                                          "train": {"lr": "fast"}}},
                                             **good_arrays()), "train.lr"),
    "unknown config key": (lambda p: forge(p, {**meta_doc(), "config": {**meta_doc()["config"], "evil": 1}},
                                           **good_arrays()), "evil"),
    "config not a map": (lambda p: forge(p, meta_doc(config=[1, 2]), **good_arrays()), "map"),
    "no config": (lambda p: forge(p, {k: v for k, v in meta_doc().items() if k != "config"}, **good_arrays()),
                  "no config"),
    "sizes disagree with the arrays": (lambda p: forge(p, meta_doc(sizes=[784, 9, 10]), **good_arrays()),
                                       "layer sizes"),
    "sizes not 784 in, 10 out": (lambda p: forge(p, meta_doc(sizes=[100, 8, 3]), **good_arrays()), "layer sizes"),
    "sizes [784], no arrays": (lambda p: forge(p, {**with_model(hidden=[]), "sizes": [784]}), "layer sizes"),
    "sizes of the wrong type": (lambda p: forge(p, meta_doc(sizes="784-8-10"), **good_arrays()), "layer sizes"),
    "meta not a map": (lambda p: forge(p, "[1, 2, 3]", **good_arrays()), "not written by bp"),
    "deeply nested metadata": (lambda p: forge(p, json.dumps(meta_doc())[:-1] + ', "x": '
                                               + "[" * DEEP + "]" * DEEP + "}", **good_arrays()), "nested"),
    "huge integer in metadata": (lambda p: forge(p, json.dumps(meta_doc())[:-1] + ', "x": ' + "9" * 10_000 + "}",
                                                 **good_arrays()), "corrupt metadata"),
    "oversized metadata": (lambda p: forge(p, meta_doc(junk="x" * (5 << 20)), **good_arrays()),
                           "over bp's limit"),
    "nan weights": (lambda p: forge(p, meta_doc(), **{**good_arrays(), "W1": np.full((8, 10), np.nan, np.float32)}),
                    "diverged"),
    "inf bias": (lambda p: forge(p, meta_doc(), **{**good_arrays(), "b0": np.full(8, np.inf, np.float32)}),
                 "diverged"),
    "float64 weights": (lambda p: forge(p, meta_doc(), **{**good_arrays(), "W0": np.zeros((784, 8))}),
                        "float64 values, not float32"),
    "a terabyte in a .npy header": (lambda p: npz_with(p, {**good_members(),
                                                          "W0.npy": npy_header((10**6, 250_000))}),
                                    r"shape \(1000000, 250000\)"),
    "a terabyte claimed by the sizes": (
        lambda p: npz_with(p, {**good_members({**with_model(hidden=[100_000] * 100),
                                              "sizes": [784, *[100_000] * 100, 10]})}), "over bp's limit"),
    "data shorter than its header": (lambda p: npz_with(p, {**good_members(),
                                                           "W1.npy": npy_header((8, 10)) + b"\0" * 10}),
                                     "truncated"),
    "a zip directory of gigabytes": (lambda p: p.write_bytes(
        b"PK\x03\x04" + b"\0" * 100 + b"PK\x05\x06" + b"\0" * 8 + (2**31).to_bytes(4, "little") + b"\0" * 6),
        "over bp's limit"),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_forged_checkpoints_are_refused_in_one_line(case, tmp_path):
    path = tmp_path / "forged.npz"
    make, needle = FORGED[case]
    make(path)
    with pytest.raises(CheckpointError, match=needle) as info:
        load_model(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and len(message) < 600


def test_a_long_forged_value_is_truncated_in_the_message(tmp_path):
    forge(tmp_path / "f.npz", with_model(activation="relu" + "x" * 100_000), **good_arrays())
    with pytest.raises(CheckpointError, match="model.activation") as info:
        load_model(tmp_path / "f.npz")
    assert len(str(info.value)) <= 300


def test_unknown_members_are_never_read(tmp_path, monkeypatch):
    """A member bp does not know stays unread, however big or broken it claims to be."""
    import zipfile

    path = tmp_path / "extra.npz"
    npz_with(path, {**good_members(), "huge.npy": npy_header((10**6, 10**6)) + b"\0" * 64,
                    "W7.npy": b"not even a .npy file", "opt.v0.npy": npy_header((10**12,))})
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name))
                        or real_open(self, name, *a, **k))
    model = load_model(path)
    assert model.spec.sizes == [784, 8, 10]
    assert sorted(opened) == ["W0.npy", "W1.npy", "b0.npy", "b1.npy", "meta.npy"]


def test_a_big_unknown_member_costs_no_memory(tmp_path):
    import tracemalloc

    path = tmp_path / "big.npz"
    forge(path, meta_doc(), **good_arrays(), extra=np.ones(8 << 20, np.float32))  # 32 MB never needed
    tracemalloc.start()
    try:
        load_model(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the model is 25 kB


def test_big_endian_and_fortran_order_weights_load_as_written(tmp_path):
    arrays = {k: np.random.default_rng(0).standard_normal(v.shape).astype(np.float32) for k, v in good_arrays().items()}
    odd = {"W0": arrays["W0"].astype(">f4"), "W1": np.asfortranarray(arrays["W1"])}
    forge(tmp_path / "odd.npz", meta_doc(), **{**arrays, **odd})
    model = load_model(tmp_path / "odd.npz")
    for l in range(2):
        assert np.array_equal(model.Ws[l], arrays[f"W{l}"]) and model.Ws[l].dtype == np.float32


def test_metadata_read_alone_is_validated_too(tmp_path):
    from bpcli.checkpoint import read_checkpoint

    forge(tmp_path / "f.npz", with_model(activation="swish"))
    with pytest.raises(CheckpointError, match="model.activation"):
        read_checkpoint(tmp_path / "f.npz", arrays=False)


def test_a_fifo_checkpoint_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "bpcli.cli", "evaluate", str(fifo)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: checkpoint") and "named pipe" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize("epoch", [float("nan"), float("inf"), 1.5, -1, "12", [1], True])
def test_an_epoch_that_is_not_a_whole_number_is_refused(tmp_path, epoch):
    """The epoch is shown by the web page and in an ONNX file: meta is untrusted, checked on load
    (a NaN made export --web and serve end in a traceback)."""
    spec = Spec([784, 8, 10], "relu", "softmax", "cross_entropy")
    Ws, bs = init_params(spec, np.random.default_rng(0))
    path = tmp_path / "best.npz"
    save_checkpoint(path, Ws, bs, meta_for(spec.sizes, epoch=epoch))
    with pytest.raises(CheckpointError, match="metadata has a bad 'epoch', .*: not a whole number >= 0"):
        load_model(path)


def test_a_file_that_fails_to_read_is_a_checkpoint_error():
    """/proc/self/mem is a regular file by stat whose first read fails (EIO)."""
    with pytest.raises(CheckpointError, match="unreadable or truncated"):
        load_model("/proc/self/mem")
