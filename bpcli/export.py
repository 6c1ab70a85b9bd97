"""``bp export --onnx``: a trained model as an ONNX file any runtime can serve.

The graph is the network's forward pass, layer by layer, as ONNX operators::

    pixels  float32 [N, 784]   row-major 28x28, values in [0, 1], ink light on dark
    z1 = Gemm(pixels, W0, b0);  a1 = Relu(z1)        (Sigmoid, Tanh, LeakyRelu(0.01))
    ...
    logits = Gemm(a[L-1], W[L-1], b[L-1])           [N, 10], the output layer's z
    probabilities = Softmax(logits, axis=1)          [N, 10]
                  = s / max(sum(s), 1e-12), s = Sigmoid(logits)   for sigmoid outputs,
                    normalised as ``bp predict`` reports them (Model.predict_proba)

Opset 17 and IR version 8, read by every onnxruntime since 1.13 and by
onnxruntime-web. ``metadata_props`` tell a consumer the contract: bp's
version, the network, its test accuracy, the input and outputs, and how
``bp predict`` prepares a picture.

Nothing is written unverified: the file is written to a temporary name,
checked by ``onnx.checker.check_model(full_check=True)`` (shape inference
included) and, when onnxruntime is installed, run on MNIST's 10,000 test
images (or, without MNIST at hand, on a fixed random sample); only a file
that gives bp's digits and probabilities within ``TOLERANCE`` is renamed to
its final name.

onnx is an optional extra (``pip install -e '.[export]'``), imported only
here, inside the functions.
"""

import os

import numpy as np

from . import __version__
from .api import network_string
from .errors import BpError, ConfigError, DataError
from .fsutil import atomic_path, one_line, refuse_non_file, shown_path

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17: older runtimes refuse a newer IR
TOLERANCE = 1e-5  # largest difference allowed between onnxruntime's probabilities and bp's
SAMPLE_SIZE = 2000  # random images verified on when MNIST's test set is not at hand
INSTALL_HINT = "bp export --onnx needs the onnx package: pip install -e '.[export]' (or pip install onnx)"

ONNX_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "leaky_relu": "LeakyRelu"}

INPUT = ("float32 [N, 784]: N 28x28 grey images, row-major, values in [0, 1] (pixel level / 255), "
         "ink light (1) on a dark background (0), as in MNIST")
OUTPUTS = ("logits: float32 [N, 10], the output layer's weighted input z; probabilities: float32 [N, 10], "
           "{how}, what bp predict reports; the predicted digit is argmax(probabilities)")
PREPARATION = (
    "MNIST images need only pixel / 255. A picture of a digit (photo, scan, drawing) is prepared as "
    "bp predict does (bpcli.prepare_image, bpcli/image.py): grey levels; ink made light on dark, "
    "whichever polarity it had; the paper level (a plane or a coarse map, so shadows go too) "
    "subtracted and the contrast stretched; a mild blur and a soft threshold above the paper noise; "
    "cropped to the ink's bounding box, isolated specks ignored; hairline strokes thickened to about "
    "2 px; the longer side scaled to 20 px (area-averaged, grey edges) and placed in a 28x28 field "
    "with the ink's centre of mass at (14, 14); then / 255."
)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise BpError(INSTALL_HINT) from None
    return onnx


def check_output(path, force):
    """Refuse (exit 2) to replace an existing file without ``force``, and a folder, a link or
    a device always;
    a missing parent folder is a runtime error (exit 1). Cheap: called before any work."""
    shown = shown_path(path)
    if os.path.isdir(path):
        raise ConfigError(f"--onnx {shown} is a folder; name the .onnx file to write")
    refuse_non_file(path, ConfigError)  # a link (/dev/stdout) or a device: never renamed over
    if os.path.lexists(path) and not force:
        raise ConfigError(f"{shown} already exists; pass --force to overwrite it, or choose another file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise BpError(f"cannot write {shown}: the folder {shown_path(parent)} does not exist; create it first")


def build_graph(model, metadata):
    """The ONNX ModelProto of ``model``'s forward pass (see the module docstring);
    ``metadata`` ({key: text}) becomes its metadata_props."""
    from onnx import TensorProto, helper, numpy_helper

    spec = model.spec
    L = len(model.Ws)
    initializers, nodes = [], []
    a = "pixels"
    for l, (W, b) in enumerate(zip(model.Ws, model.bs)):
        initializers += [numpy_helper.from_array(np.asarray(W, np.float32), f"W{l}"),
                         numpy_helper.from_array(np.asarray(b, np.float32), f"b{l}")]
        z = "logits" if l == L - 1 else f"z{l + 1}"
        nodes.append(helper.make_node("Gemm", [a, f"W{l}", f"b{l}"], [z], name=f"layer{l + 1}_gemm"))
        if l < L - 1:
            a = f"a{l + 1}"
            op = ONNX_ACTIVATIONS[spec.activation]
            extra = {"alpha": _leaky_slope()} if op == "LeakyRelu" else {}
            nodes.append(helper.make_node(op, [z], [a], name=f"layer{l + 1}_{spec.activation}", **extra))
    if spec.output == "softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"))
    else:
        # independent sigmoid scores, normalised to sum to 1 as bp predict reports them
        initializers += [numpy_helper.from_array(np.array([1], np.int64), "class_axis"),
                         numpy_helper.from_array(np.array(1e-12, np.float32), "tiny")]
        nodes += [helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid"),
                  helper.make_node("ReduceSum", ["scores", "class_axis"], ["score_sum"], keepdims=1,
                                   name="score_sum"),
                  helper.make_node("Max", ["score_sum", "tiny"], ["score_total"], name="no_zero_division"),
                  helper.make_node("Div", ["scores", "score_total"], ["probabilities"], name="normalise")]
    k = spec.sizes[-1]
    graph = helper.make_graph(
        nodes, "bp_mlp",
        inputs=[helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", spec.sizes[0]])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k]),
                 helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        initializer=initializers,
        doc_string=f"bp MLP {network_string(spec)}",
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="bp", producer_version=__version__,
                              doc_string="An image classifier trained by bp (see metadata_props: dataset, "
                                         "classes, input, preparation).")
    proto.ir_version = IR_VERSION
    helper.set_model_props(proto, metadata)
    return proto


def _leaky_slope():
    from .network import LEAKY_SLOPE

    return float(LEAKY_SLOPE)


GARMENT_PREPARATION = (
    "Fashion-MNIST images need only pixel / 255. A product photo is prepared as bp predict does for a "
    "Fashion-MNIST model (bpcli.image.load_for, prepare_garment): grey levels; the background (the "
    "corners' level) trimmed away; the longer side fitted to 28 px keeping the aspect, centred; made "
    "light on dark if the background was light; then / 255."
)


def metadata(model, test_accuracy, accuracy_source):
    from .datasets import of_config

    spec = model.spec
    dataset = of_config(model.meta.get("config", {}))
    how = ("softmax(logits)" if spec.output == "softmax" else
           "sigmoid(logits) normalised to sum to 1 (the model was trained with independent sigmoid outputs)")
    return {
        "bp_version": __version__,
        "dataset": dataset.name,
        "classes": ",".join(dataset.classes),
        "network": network_string(spec),
        "epoch": str(model.meta.get("epoch", "unknown")),
        "test_accuracy": "unknown" if test_accuracy is None else f"{test_accuracy:.4f}",
        "test_accuracy_source": accuracy_source,
        "input": f"pixels: {INPUT}",
        "outputs": OUTPUTS.format(how=how),
        "preparation": GARMENT_PREPARATION if dataset.noun == "garment" else PREPARATION,
    }


def verification_images(model, data_dir=None):
    """``(X uint8 (n, 784), labels or None, description)``: MNIST's test images when they are
    at hand without a download (a verified cache, or a local mirror folder), else a fixed
    random sample of pixel patterns: half noise, half sparse strokes of ink."""
    from .data import load_mnist_for

    try:
        data = load_mnist_for(model.meta.get("config", {}), data_dir, split="test", offline=True)
    except DataError:
        rng = np.random.default_rng(0)
        half = SAMPLE_SIZE // 2
        noise = rng.integers(0, 256, size=(half, 784), dtype=np.uint8)
        sparse = np.where(rng.random((SAMPLE_SIZE - half, 784)) < 0.15,
                          rng.integers(128, 256, size=(SAMPLE_SIZE - half, 784)), 0).astype(np.uint8)
        return np.concatenate([noise, sparse]), None, (f"{SAMPLE_SIZE:,} fixed random images (MNIST's test "
                                                       "set is not in the data dir: bp download fetches it)")
    from .datasets import of_config

    title = of_config(model.meta.get("config", {})).title
    return data.test_images, data.test_labels, f"{len(data.test_labels):,} {title} test images"


def checked_outputs(model, ckpt, data_dir=None):
    """``(X, labels or None, description, P)``: the model's probabilities ``P`` on its
    verification images, refused (CheckpointError) when they are not numbers, as
    ``bp evaluate`` refuses them: nothing takes a diverged model elsewhere."""
    from .checkpoint import check_outputs

    X, y, images = verification_images(model, data_dir)
    P = model.predict_proba(X)
    check_outputs(P, ckpt)
    return X, y, images, P


def recorded_accuracy(ckpt):
    """The test accuracy ``bp train`` recorded for this checkpoint (the record of a
    finished run, beside its best.npz), or None."""
    from . import record

    if os.path.basename(ckpt) != "best.npz":
        return None
    doc = record.read(os.path.dirname(ckpt))
    value = record.number(doc, "test_accuracy") if record.state(doc) == record.FINISHED else None
    return value if value is not None and 0 <= value <= 1 else None


def export_onnx(model, ckpt, out, force=False, data_dir=None):
    """Write ``model`` (loaded from ``ckpt``) to ``out`` as ONNX, verified; return a report:
    ``{path, bytes, network, opset, checked, verified}`` (``verified`` is None without
    onnxruntime, else ``{images, max_difference, onnxruntime}``)."""
    check_output(out, force)
    onnx = _onnx()
    X, y, images, P = checked_outputs(model, ckpt, data_dir)
    if y is not None:
        accuracy = float(np.mean(P.argmax(axis=1) == y))
        source = f"measured by bp export on the {len(y):,} test images of its dataset"
    else:
        accuracy = recorded_accuracy(ckpt)
        source = ("recorded by bp train (result.json of the run)" if accuracy is not None else
                  "not recorded: the checkpoint holds no test accuracy and MNIST's test set was not at hand")
    proto = build_graph(model, metadata(model, accuracy, source))
    report = {"path": out, "network": network_string(model.spec), "opset": OPSET,
              "test_accuracy": accuracy, "verified": None}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            f.write(proto.SerializeToString())
        try:
            onnx.checker.check_model(tmp, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
            raise BpError(f"the ONNX graph bp built fails onnx's checker ({_first_line(err)}); "
                          "nothing was written: please report this as a bug") from None
        report["verified"] = verify(tmp, X, P, images)
        report["bytes"] = os.path.getsize(tmp)
    return report


def verify(path, X, P, images):
    """Run the ONNX file at ``path`` on ``X`` with onnxruntime and compare with bp's
    probabilities ``P``: the same digit for every image whose two likeliest digits bp
    tells apart by more than TOLERANCE, and probabilities within TOLERANCE, else BpError.
    None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    from .metrics import to_float

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are not bp's output
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    Q = session.run(["probabilities"], {"pixels": to_float(X)})[0]
    difference = float(np.abs(Q - P).max()) if len(P) else 0.0
    # where bp's two likeliest digits are within TOLERANCE of each other, either is bp's
    # answer as far as float32 can tell (a sum in another order may swap them)
    top_two = np.sort(P, axis=1)[:, -2:]
    clear = top_two[:, 1] - top_two[:, 0] > TOLERANCE
    disagree = int(np.count_nonzero((Q.argmax(axis=1) != P.argmax(axis=1)) & clear))
    if disagree or not difference <= TOLERANCE:
        raise BpError(f"onnxruntime disagrees with bp on {images}: {disagree} different digits, probabilities "
                      f"up to {difference:.1e} apart (tolerance {TOLERANCE:g}); nothing was written: "
                      "please report this as a bug")
    return {"images": images, "max_difference": difference, "onnxruntime": onnxruntime.__version__}


def _first_line(err):
    return one_line(" ".join(str(err).split()))
