"""bp explain: its numbers are the training gradient, checked against backprop and finite differences."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bpcli import explain as ex
from bpcli.checkpoint import save_checkpoint
from bpcli.cli import cli
from bpcli.metrics import to_float
from bpcli.network import ACTIVATIONS, OUTPUTS, Spec, backward, cost, forward, init_params, one_hot, output_delta
from synthetic import NEEDS_MNIST, real_mnist_folder, tiny_mnist

PAIRS = [(act, out, loss) for act in ACTIVATIONS for out in OUTPUTS for loss in ("cross_entropy", "mse")]


@pytest.fixture(scope="module")
def data():
    return tiny_mnist(n_train=200, n_test=120)


def small_net(activation="sigmoid", output="sigmoid", loss="mse", hidden=(6,), seed=0):
    """A float64 784-6-10 net with non-zero biases, so every path of the derivative matters."""
    spec = Spec([784, *hidden, 10], activation, output, loss)
    rng = np.random.default_rng(seed)
    Ws, bs = init_params(spec, rng, "xavier", dtype=np.float64)
    bs = [b + 0.1 * rng.standard_normal(b.shape) for b in bs]
    return spec, Ws, bs


def example_cost(Ws, bs, spec, x, target):
    acts, _ = forward(Ws, bs, x[None, :], spec)
    return cost(acts[-1], one_hot([target], 10, np.float64), spec.output, spec.loss)


@pytest.mark.parametrize("activation,output,loss", PAIRS)
def test_explain_numbers_are_backprops(data, activation, output, loss):
    spec, Ws, bs = small_net(activation, output, loss)
    x8, target = data.test_images[0], 3
    doc = ex.explain_arrays(Ws, bs, spec, x8, target=target, top=4,
                            batch_X=data.test_images[:32], batch_y=data.test_labels[:32], lr=0.1)
    x = to_float(x8).astype(np.float64)
    acts, masks = forward(Ws, bs, x[None, :], spec)
    Y = one_hot([target], 10, np.float64)
    dWs, dbs = backward(Ws, acts, masks, Y, spec)
    delta = output_delta(acts[-1], Y, spec.output, spec.loss)[0]

    out, zi = doc["output_layer"], doc["zoom_in"]
    assert np.allclose(out["activations"], acts[-1][0], rtol=0, atol=1e-15)
    assert out["desired"] == [1.0 if d == target else 0.0 for d in range(10)]
    assert np.allclose(out["dC0_dz"], delta, rtol=0, atol=1e-15)
    assert out["cost"] == pytest.approx(cost(acts[-1], Y, output, loss), rel=1e-12)
    assert zi["neuron"] == target and zi["fan_in"] == 6
    assert zi["bias"]["gradient"] == pytest.approx(dbs[-1][target], rel=1e-12)
    grads = [r["gradient"] for r in zi["weights"]]
    assert grads == sorted(grads, key=lambda g: -abs(g))
    for r in zi["weights"]:
        i = r["from"]
        assert r["gradient"] == pytest.approx(dWs[-1][i, target], rel=1e-12)
        assert r["gradient"] == pytest.approx(acts[-2][0, i] * delta[target], rel=1e-12)  # a(L-1) * dC0/dz
        assert r["direction"] == ("up" if r["gradient"] < 0 else "down")
    for r in zi["previous_activations"]:
        i = r["neuron"]
        assert r["gradient"] == pytest.approx(Ws[-1][i, target] * delta[target], rel=1e-12)
        assert r["gradient_all_outputs"] == pytest.approx(float(delta @ Ws[-1][i]), rel=1e-12, abs=1e-15)

    zo = doc["zoom_out"]
    X = to_float(data.test_images[:32]).astype(np.float64)
    Yb = one_hot(data.test_labels[:32], 10, np.float64)
    bacts, bmasks = forward(Ws, bs, X, spec)
    gW, gb = backward(Ws, bacts, bmasks, Yb, spec)
    for layer, dW, db in zip(zo["layers"], gW, gb):
        assert layer["W_norm"] == pytest.approx(np.linalg.norm(dW), rel=1e-12)
        assert layer["b_norm"] == pytest.approx(np.linalg.norm(db), rel=1e-12)
    for c in zo["largest"]:
        G = (gW if c["param"] == "W" else gb)[c["layer"] - 1]
        assert c["gradient"] == pytest.approx(G[tuple(c["index"])], rel=1e-12)
    assert zo["cost_before"] == pytest.approx(cost(bacts[-1], Yb, output, loss), rel=1e-12)


@pytest.mark.parametrize("activation,output,loss", [("sigmoid", "sigmoid", "mse"),
                                                    ("relu", "softmax", "cross_entropy"),
                                                    ("tanh", "softmax", "mse")])
def test_finite_differences_agree_with_one_weight(data, activation, output, loss):
    """Central differences of the float64 cost, on the zoom-in's top weight and the zoom-out's top W1."""
    spec, Ws, bs = small_net(activation, output, loss, hidden=(6, 5))
    x8, target, eps = data.test_images[1], int(data.test_labels[1]), 1e-6
    doc = ex.explain_arrays(Ws, bs, spec, x8, target=target,
                            batch_X=data.test_images[:16], batch_y=data.test_labels[:16], lr=0.1)
    x = to_float(x8).astype(np.float64)

    top = doc["zoom_in"]["weights"][0]
    i, j = top["from"], target
    W = Ws[-1]
    old = W[i, j]
    W[i, j] = old + eps
    c_plus = example_cost(Ws, bs, spec, x, target)
    W[i, j] = old - eps
    c_minus = example_cost(Ws, bs, spec, x, target)
    W[i, j] = old
    g_fd = (c_plus - c_minus) / (2 * eps)
    assert abs(top["gradient"] - g_fd) / max(abs(top["gradient"]) + abs(g_fd), 1e-4) < 1e-6

    X = to_float(data.test_images[:16]).astype(np.float64)
    y = data.test_labels[:16]
    first = next(c for c in doc["zoom_out"]["largest"] + doc["zoom_out"]["layers"][0]["largest"]
                 if c["layer"] == 1 and c["param"] == "W")
    idx = tuple(first["index"])
    old = Ws[0][idx]
    Ws[0][idx] = old + eps
    c_plus = ex.batch_cost(Ws, bs, spec, X, y)
    Ws[0][idx] = old - eps
    c_minus = ex.batch_cost(Ws, bs, spec, X, y)
    Ws[0][idx] = old
    g_fd = (c_plus - c_minus) / (2 * eps)
    assert abs(first["gradient"] - g_fd) / max(abs(first["gradient"]) + abs(g_fd), 1e-4) < 1e-6


def test_batch_gradient_is_the_average_of_the_examples(data):
    """Zoom out = every example's gradient, averaged: what the SGD step follows."""
    spec, Ws, bs = small_net("relu", "softmax", "cross_entropy")
    X = to_float(data.test_images[:8]).astype(np.float64)
    y = data.test_labels[:8]
    _, dWs, dbs = ex.batch_gradient(Ws, bs, spec, X, y)
    per = [ex.example_gradient(Ws, bs, spec, x, int(t)) for x, t in zip(X, y)]
    for l in range(len(Ws)):
        assert np.allclose(np.mean([p[2][l] for p in per], axis=0), dWs[l], rtol=1e-10, atol=1e-14)
        assert np.allclose(np.mean([p[3][l] for p in per], axis=0), dbs[l], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("activation,output,loss", PAIRS)
def test_one_sgd_step_lowers_the_cost(data, activation, output, loss):
    spec, Ws, bs = small_net(activation, output, loss, hidden=(8,), seed=0)
    batch = ex.balanced_batch(data.train_labels, 40, np.random.default_rng(0))
    doc = ex.explain_arrays(Ws, bs, spec, data.train_images[0], batch_X=data.train_images[batch],
                            batch_y=data.train_labels[batch], lr=0.1)
    zo = doc["zoom_out"]
    assert zo["decreased"] and zo["cost_after"] < zo["cost_before"]
    assert zo["change"] == pytest.approx(zo["cost_after"] - zo["cost_before"])
    # a small step goes down by lr |grad|^2 to first order: the gradient is the steepest direction
    small = ex.explain_arrays(Ws, bs, spec, data.train_images[0], batch_X=data.train_images[batch],
                              batch_y=data.train_labels[batch], lr=1e-4)["zoom_out"]
    assert small["change"] == pytest.approx(small["predicted_change"], rel=0.02)


def test_target_defaults_to_the_label_then_the_prediction(data):
    spec, Ws, bs = small_net()
    x = data.test_images[2]
    guessed = ex.explain_arrays(Ws, bs, spec, x)
    assert guessed["target"] == guessed["predicted"] and guessed["target_from"] == "prediction"
    assert guessed["label"] is None and guessed["zoom_out"] is None
    labelled = ex.explain_arrays(Ws, bs, spec, x, label=4)
    assert labelled["target"] == 4 and labelled["target_from"] == "label"
    chosen = ex.explain_arrays(Ws, bs, spec, x, label=4, target=9)
    assert chosen["target"] == 9 and chosen["zoom_in"]["neuron"] == 9 and chosen["target_from"] == "flag"


def test_balanced_batch_holds_every_digit(data):
    idx = ex.balanced_batch(data.test_labels, 30, np.random.default_rng(0))
    assert len(set(idx)) == 30
    assert np.bincount(data.test_labels[idx], minlength=10).tolist() == [3] * 10
    again = ex.balanced_batch(data.test_labels, 30, np.random.default_rng(0))
    assert np.array_equal(idx, again)


def test_text_has_arrows_and_an_ascii_fallback(data):
    spec, Ws, bs = small_net("relu", "softmax", "cross_entropy")
    doc = ex.explain_arrays(Ws, bs, spec, data.test_images[0], label=int(data.test_labels[0]),
                            batch_X=data.test_images[:20], batch_y=data.test_labels[:20])
    doc["zoom_out"].update(split="test")
    text = ex.render_text(doc, unicode=True)
    for heading in ("Output layer", f"Zoom in on neuron {doc['target']}", "Zoom out: the gradient over 20 examples",
                    "cost C before", "cost C after"):
        assert heading in text
    assert "↑" in text and "↓" in text and "█" in text
    plain = ex.render_text(doc, unicode=False)
    plain.encode("ascii")  # no character an ASCII terminal cannot print
    assert "^" in plain and "v " in plain and "#" in plain
    # each output neuron's row points the way its negative gradient does (the legend lines aside)
    wishes = doc["output_layer"]["dC0_dz"]
    for rendered, up, down in ((text, " ↑ ", " ↓ "), (plain, " ^ ", " v ")):
        section = rendered.split("  digit  activation")[1].split("Cost of this example")[0]
        table = [row for row in section.splitlines()[1:] if row.strip()]
        assert len(table) == 10
        assert [up in row for row in table] == [g < 0 for g in wishes]
        assert [down in row for row in table] == [g > 0 for g in wishes]
    assert ex.stream_is_unicode(type("S", (), {"encoding": "UTF-8"})())
    assert not ex.stream_is_unicode(type("S", (), {"encoding": "ascii"})())


# ---------------------------------------------------------------------------
# The command


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data):
    """A small float32 checkpoint as bp train writes it (784-16-10 relu, softmax + cross-entropy)."""
    spec = Spec([784, 16, 10])
    Ws, bs = init_params(spec, np.random.default_rng(0))
    path = tmp_path_factory.mktemp("model") / "best.npz"
    config = {"seed": 0, "data": {"dir": "data", "validation": 0, "limit": None},
              "model": {"hidden": [16], "activation": "relu", "output": "softmax", "loss": "cross_entropy"},
              "train": {"lr": 0.05}}
    save_checkpoint(path, Ws, bs, {"sizes": spec.sizes, "config": config, "epoch": 1})
    return path


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    """A hand-drawn-looking 7: dark strokes on white paper, as a person's picture would be."""
    from PIL import Image, ImageDraw

    path = tmp_path_factory.mktemp("img") / "digit.png"
    im = Image.new("L", (120, 160), 255)
    ImageDraw.Draw(im).line([(25, 30), (95, 30), (50, 135)], fill=0, width=10)
    im.save(path)
    return path


def test_cli_explains_an_image_file(checkpoint, digit_png):
    result = CliRunner().invoke(cli, ["explain", str(digit_png), "--model", str(checkpoint), "--batch", "0",
                                      "--top", "3"])
    assert result.exit_code == 0, result.output
    assert "(true digit unknown)" in result.output and "the predicted digit" in result.output
    assert "Zoom in on neuron" in result.output and "Zoom out" not in result.output

    result = CliRunner().invoke(cli, ["explain", str(digit_png), "--model", str(checkpoint), "--batch", "0",
                                      "--target", "6", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["target"] == 6 and doc["input"] == {"image": str(digit_png)}
    assert doc["checkpoint"] == str(checkpoint) and len(doc["zoom_in"]["weights"]) == 5


@pytest.mark.parametrize("args", [[], ["IMG", "--index", "0"]])
def test_cli_needs_exactly_one_input(checkpoint, digit_png, args):
    args = [str(digit_png) if a == "IMG" else a for a in args]
    result = CliRunner().invoke(cli, ["explain", *args, "--model", str(checkpoint)])
    assert result.exit_code == 2
    assert "--index" in result.output and "Traceback" not in result.output


def test_cli_unreadable_image_is_one_error_line(checkpoint, tmp_path):
    bad = tmp_path / "not.png"
    bad.write_bytes(b"hello")
    result = CliRunner().invoke(cli, ["explain", str(bad), "--model", str(checkpoint), "--batch", "0"])
    assert result.exit_code == 1 and result.output.startswith("Error: cannot read image")


def test_cli_falls_back_to_ascii_on_a_non_utf8_terminal(checkpoint, digit_png):
    env = dict(os.environ, PYTHONIOENCODING="ascii")
    code = "from bpcli.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, "explain", str(digit_png), "--model", str(checkpoint),
                           "--batch", "0"], capture_output=True, env=env, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    text = proc.stdout.decode("ascii")
    assert "Zoom in on neuron" in text and (" ^ " in text or " v " in text)


@NEEDS_MNIST
def test_cli_explains_mnist_test_image_with_zoom_out(checkpoint, tmp_path):
    env = {"BP_DATA_DIR": str(tmp_path / "data"), "BP_MNIST_MIRROR": str(real_mnist_folder()), "BP_OFFLINE": ""}
    result = CliRunner().invoke(cli, ["explain", "--index", "0", "--model", str(checkpoint), "--batch", "50",
                                      "--json"], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["label"] == 7 and doc["target"] == 7 and doc["input"] == {"split": "test", "index": 0}
    zo = doc["zoom_out"]
    assert zo["n"] == 50 and all(c == 5 for c in zo["digits"].values())
    assert zo["lr"] == 0.05 and zo["cost_after"] < zo["cost_before"]

    result = CliRunner().invoke(cli, ["explain", "--index", "10000", "--model", str(checkpoint)], env=env)
    assert result.exit_code == 2 and "out of range" in result.output
