"""``bp explain``: the gradient of one example, drawn as arrows, then of a mini-batch.

This is the classic explanation of backprop, computed on a real network.
Take one training example, say a 2. The output layer should read 1 for the
"2" neuron and 0 for the others; the cost of the example, C0, measures how
far it is. Zoom in on the "2" neuron: three levers raise its activation,

    its bias            dC0/db       = dC0/dz
    its weights         dC0/dw[i]    = a(L-1)[i] * dC0/dz
    the activations     dC0/da(L-1)[i] = w[i] * dC0/dz
    feeding it

where dC0/dz is the neuron's error, ``delta`` in ``bpcli.network``. Weights
from strongly active neurons matter most: their gradient is proportional to
a(L-1). A negative gradient means "increase this" (an up arrow), a positive
one "decrease it" (a down arrow); the arrow's length is the gradient's size.
The activations cannot be set directly; their wishes, summed over all the
output neurons, are passed back to the previous layer's weights and biases,
layer by layer: that is backpropagation.

Zoom out: averaged over a mini-batch of examples of every digit, these
wishes are the gradient vector the SGD step ``w <- w - lr * dC/dw`` follows,
and one such step lowers the batch's cost.

Every number here comes from ``network.forward``, ``network.backward`` and
``network.output_delta``, the functions training uses: ``backward`` on one
example gives the batch-mean gradient of a batch of one, which is dC0/dw.
The math runs in float64 (on a copy of the model's float32 weights) so the
small numbers printed are exact to their last digit.

Layers are numbered as in the math, 1..L (``Ws[0]`` is W[1]); the JSON
document ``explain_model`` returns is what ``bp explain --json`` prints.
"""

import sys

import numpy as np

from .errors import ConfigError
from .fsutil import shown_path
from .metrics import to_float
from .network import backward, cost, forward, one_hot, output_delta

DEFAULT_LR = 0.1   # when neither --lr nor the checkpoint's train.lr says
BAR_WIDTH = 24


def step_size(config):
    """The learning rate of a model's one illustrated SGD step: its run's train.lr (from its
    checkpoint's ``config``), else DEFAULT_LR. bp explain and the web page both show it."""
    return config.get("train", {}).get("lr", DEFAULT_LR)

# ---------------------------------------------------------------------------
# The math: pure functions on arrays


def direction(gradient):
    """Which way a parameter should move: the sign of the *negative* gradient."""
    if gradient < 0:
        return "up"
    if gradient > 0:
        return "down"
    return "none"


def _top(values, k):
    """Indices of the k largest |values|, largest first (ties: lower index first)."""
    order = np.argsort(-np.abs(values), kind="stable")
    return order[:k]


def example_gradient(Ws, bs, spec, x, target):
    """Forward and backward pass on one example x (784,) with target digit ``target``.

    Returns ``(activations, delta, dWs, dbs)``: the activations [a0 = x, ..., aL]
    each of shape (fan_out,), the output error delta = dC0/dz(L) (k,), and
    dC0/dW, dC0/db per layer, exactly what ``network.backward`` computes for a
    batch of one.
    """
    X = np.asarray(x)[None, :]
    Y = one_hot([target], spec.sizes[-1], X.dtype)
    acts, masks = forward(Ws, bs, X, spec)
    dWs, dbs = backward(Ws, acts, masks, Y, spec)
    # the same function backward starts from; on a batch of one it is dC0/dz itself
    delta = output_delta(acts[-1], Y, spec.output, spec.loss)[0]
    return [a[0] for a in acts], delta, dWs, dbs


def batch_gradient(Ws, bs, spec, X, y):
    """Mean cost C and its gradient (dWs, dbs) over a batch X (n, 784), labels y (n,)."""
    Y = one_hot(y, spec.sizes[-1], X.dtype)
    acts, masks = forward(Ws, bs, X, spec)
    C = cost(acts[-1], Y, spec.output, spec.loss)
    dWs, dbs = backward(Ws, acts, masks, Y, spec)
    return C, dWs, dbs


def batch_cost(Ws, bs, spec, X, y):
    acts, _ = forward(Ws, bs, X, spec)
    return cost(acts[-1], one_hot(y, spec.sizes[-1], X.dtype), spec.output, spec.loss)


def zoom_in(Ws, bs, spec, x, target, top=5):
    """The output layer and the target neuron's gradient for one example x (784,) float.

    Returns the ``output_layer`` and ``zoom_in`` parts of the explain document.
    """
    acts, delta, dWs, dbs = example_gradient(Ws, bs, spec, x, target)
    k = spec.sizes[-1]
    A = acts[-1]
    Y = np.zeros(k)
    Y[target] = 1.0
    C0 = cost(A[None, :], Y[None, :].astype(A.dtype), spec.output, spec.loss)
    a_prev, W, j = acts[-2], Ws[-1], target
    L = len(Ws)

    output_layer = {
        "activations": [float(v) for v in A],
        "desired": [float(v) for v in Y],
        "dC0_dz": [float(v) for v in delta],
        "directions": [direction(v) for v in delta],
        "cost": float(C0),
        "predicted": int(np.argmax(A)),
    }

    gw = dWs[-1][:, j]                      # dC0/dw = a(L-1) * dC0/dz_j
    wish = W[:, j] * delta[j]               # what neuron j alone wants of a(L-1)
    total = W @ delta                       # all k output neurons' wishes, added up
    weights = [{"from": int(i), "activation": float(a_prev[i]), "weight": float(W[i, j]),
                "gradient": float(gw[i]), "direction": direction(gw[i])} for i in _top(gw, top)]
    previous = [{"neuron": int(i), "activation": float(a_prev[i]), "weight": float(W[i, j]),
                 "gradient": float(wish[i]), "gradient_all_outputs": float(total[i]),
                 "direction": direction(wish[i])} for i in _top(wish, top)]
    zoom = {
        "layer": L,
        "neuron": int(j),
        "activation": float(A[j]),
        "desired": 1.0,
        "dC0_dz": float(delta[j]),
        "previous_layer": L - 1,
        "fan_in": int(W.shape[0]),
        "bias": {"value": float(bs[-1][j]), "gradient": float(dbs[-1][j]),
                 "direction": direction(dbs[-1][j])},
        "weights": weights,
        "previous_activations": previous,
    }
    return output_layer, zoom


def zoom_out(Ws, bs, spec, X, y, lr, top=5):
    """The mini-batch gradient: its norm per layer, largest components, and one SGD step.

    X (n, 784) float, y (n,) labels, lr the step size. The step is plain SGD,
    ``w <- w - lr * dC/dw`` on copies of the weights (no momentum, no weight
    decay): the gradient step of the explanation.
    """
    C, dWs, dbs = batch_gradient(Ws, bs, spec, X, y)
    layers, parts = [], []
    for l, (dW, db) in enumerate(zip(dWs, dbs)):
        w_norm, b_norm = float(np.linalg.norm(dW)), float(np.linalg.norm(db))
        largest = []
        for name, G in (("W", dW), ("b", db)):
            flat = G.ravel()
            for i in _top(flat, top):
                index = [int(v) for v in np.unravel_index(i, G.shape)]
                largest.append({"layer": l + 1, "param": name, "index": index, "gradient": float(flat[i]),
                                "direction": direction(flat[i])})
        largest.sort(key=lambda c: -abs(c["gradient"]))
        parts += largest
        layers.append({"layer": l + 1, "shape": list(dW.shape), "W_norm": w_norm, "b_norm": b_norm,
                       "norm": float(np.hypot(w_norm, b_norm)), "largest": largest[:top]})
    norm = float(np.sqrt(sum(layer["norm"] ** 2 for layer in layers)))
    parts.sort(key=lambda c: -abs(c["gradient"]))
    Ws_after = [W - lr * dW for W, dW in zip(Ws, dWs)]
    bs_after = [b - lr * db for b, db in zip(bs, dbs)]
    C_after = batch_cost(Ws_after, bs_after, spec, X, y)
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=spec.sizes[-1])
    return {
        "n": int(len(y)),
        "digits": {str(d): int(c) for d, c in enumerate(counts)},
        "n_params": int(spec.n_params),
        "layers": layers,
        "norm": norm,
        "largest": parts[:top],
        "lr": float(lr),
        "cost_before": float(C),
        "cost_after": float(C_after),
        "change": float(C_after - C),
        # to first order, C(w - lr g) = C(w) - lr |g|^2: the steepest way down
        "predicted_change": float(-lr * norm ** 2),
        "decreased": bool(C_after < C),
    }


def balanced_batch(y, n, rng, k=10):
    """Indices of n examples taking the digits in turn (0, 1, ..., 9, 0, ...), each
    digit's examples in the order of one random permutation: every digit appears
    once n >= k. ``rng`` a numpy Generator."""
    perm = rng.permutation(len(y))
    labels = np.asarray(y)[perm].astype(np.int64)
    rank = np.zeros(len(perm), dtype=np.int64)
    for d in range(k):
        mask = labels == d
        rank[mask] = np.arange(mask.sum())
    order = np.lexsort((labels, rank))   # by rank within its digit, then by digit
    return perm[order[:n]]


def explain_arrays(Ws, bs, spec, x_uint8, *, label=None, target=None, top=5,
                   batch_X=None, batch_y=None, lr=DEFAULT_LR):
    """The explain document for one image x (784,) uint8 and an optional zoom-out batch.

    target: the digit the output should read; default the true ``label`` if
    known, else the network's prediction. batch_X (n, 784) uint8 and batch_y
    (n,): the zoom-out mini-batch (None: no zoom-out).
    """
    Ws = [np.asarray(W, dtype=np.float64) for W in Ws]
    bs = [np.asarray(b, dtype=np.float64) for b in bs]
    x = to_float(np.asarray(x_uint8)).astype(np.float64)
    k = spec.sizes[-1]
    acts, _ = forward(Ws, bs, x[None, :], spec)
    predicted = int(np.argmax(acts[-1][0]))
    if target is None:
        target, why = (label, "label") if label is not None else (predicted, "prediction")
    else:
        why = "flag"
    if not 0 <= target < k:
        raise ConfigError(f"--target must be a digit from 0 to {k - 1}, got {target}")
    output_layer, zoom = zoom_in(Ws, bs, spec, x, target, top)
    doc = {
        "model": {"sizes": list(spec.sizes), "activation": spec.activation, "output": spec.output,
                  "loss": spec.loss},
        "label": None if label is None else int(label),
        "predicted": predicted,
        "target": int(target),
        "target_from": why,
        "output_layer": output_layer,
        "zoom_in": zoom,
        "zoom_out": None,
    }
    if batch_X is not None and len(batch_X):
        Xb = to_float(np.asarray(batch_X)).astype(np.float64)
        doc["zoom_out"] = zoom_out(Ws, bs, spec, Xb, np.asarray(batch_y), lr, top)
    return doc


# ---------------------------------------------------------------------------
# I/O: a checkpoint, an image file or an MNIST image, the zoom-out batch


def explain_model(model, checkpoint=None, *, image=None, index=None, split="test", target=None, top=5,
                  batch=64, lr=None, data_dir=None, seed=0, mirrors=None, offline=None):
    """``bp explain``: the document for a user's ``image`` file or MNIST image ``index`` of ``split``.

    The zoom-out batch is ``batch`` images of ``split`` (test or train) with
    every digit represented (seed ``seed``); batch 0 skips it, and then an
    image file needs no MNIST at all. lr defaults to the checkpoint's
    train.lr. The document names the model's dataset and its classes, so the
    text can say "Sneaker" where MNIST says "7". mirrors, offline: as for
    ``download.ensure_mnist``.
    """
    if (image is None) == (index is None):
        raise ConfigError("give an IMAGE file to explain, or --index N for MNIST image N, not both"
                          if image is not None else
                          "give an IMAGE file to explain, or --index N for MNIST image N (e.g. --index 0)")
    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    from .datasets import of_config

    x = label = None
    values = model.meta.get("config", {})
    dataset = of_config(values)
    if image is not None:
        from .image import load_for

        x = load_for(image, dataset)  # before loading the data set: a bad file fails fast
    if index is not None or batch > 0:
        from .data import load_mnist_for

        data = load_mnist_for(values, data_dir, split="test" if split == "test" else None,
                              mirrors=mirrors, offline=offline)
        X, y = (data.test_images, data.test_labels) if split == "test" else (data.train_images, data.train_labels)
    if index is not None:
        if not 0 <= index < len(X):
            raise ConfigError(f"--index {index} is out of range: the {dataset.title} {split} set has {len(X):,} "
                              f"images, 0 to {len(X) - 1}")
        x, label = X[index], int(y[index])
    if lr is None:
        lr = step_size(values)
    batch_X = batch_y = None
    if batch > 0:
        idx = balanced_batch(y, min(batch, len(y)), np.random.default_rng(seed))
        batch_X, batch_y = X[idx], y[idx]
    doc = explain_arrays(model.Ws, model.bs, model.spec, x, label=label, target=target, top=top,
                         batch_X=batch_X, batch_y=batch_y, lr=lr)
    source = {"image": str(image)} if image is not None else {"split": split, "index": int(index)}
    doc = {"checkpoint": None if checkpoint is None else str(checkpoint), "input": source,
           "dataset": dataset.name, "classes": list(dataset.classes), **doc}
    if doc["zoom_out"] is not None:
        doc["zoom_out"].update(split=split, seed=seed)
    return doc


# ---------------------------------------------------------------------------
# Text: arrows and bars, with an ASCII fallback

UNICODE = {"up": "↑", "down": "↓", "none": "·", "bar": "█", "x": "×", "sum": "Σ", "sq": "²",
           "eta": "η", "grad": "∇C", "to": "→", "get": "←", "minus": "−"}
ASCII = {"up": "^", "down": "v", "none": "-", "bar": "#", "x": "x", "sum": "sum", "sq": "^2",
         "eta": "lr", "grad": "grad C", "to": "->", "get": "<-", "minus": "-"}


def stream_is_unicode(stream=None):
    """True when ``stream`` (default stdout) encodes UTF-8, so arrows and bars print."""
    encoding = getattr(stream or sys.stdout, "encoding", None) or ""
    return encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig")


def _bar(value, scale, s):
    """A bar of |value| / scale * BAR_WIDTH blocks: lengths compare within one table."""
    if scale <= 0:
        return ""
    return s["bar"] * round(abs(value) / scale * BAR_WIDTH)


def _num(v, width=9):
    """Four decimals, or three significant digits when that would print as 0.0000."""
    text = f"{v:.4f}" if v == 0 or abs(v) >= 5e-4 else f"{v:.2e}"
    return f"{text:>{width}}"


def _cost_formula(doc, s):
    out, loss, t = doc["model"]["output"], doc["model"]["loss"], doc["target"]
    if loss == "mse":
        return f"C0 = {s['sum']} (a - y){s['sq']}"
    if out == "softmax":
        return f"C0 = -log a({t})"
    return f"C0 = -{s['sum']} [y log a + (1 - y) log(1 - a)]"


def _unit(layer, i, fan_in):
    """A previous-layer unit's name: a pixel for the input layer, a neuron otherwise."""
    if layer == 0 and fan_in == 784:
        return f"pixel {i} (r{i // 28},c{i % 28})"
    return f"neuron {i}"


def render_text(doc, unicode=True):
    """The explain document as teaching text; ``unicode`` False uses ASCII arrows and bars:
    the example and its target, the output layer, the zoom on the target's neuron, and
    the zoom out to a mini-batch's gradient."""
    s = UNICODE if unicode else ASCII
    words = _Words(doc)
    lines = _header(doc, words)
    lines += ["", *_output_layer(doc, words, s)]
    lines += ["", *_zoom_in(doc, s)]
    if doc["zoom_out"] is not None:
        lines += ["", *_zoom_out(doc["zoom_out"], words, s)]
    return "\n".join(lines)


class _Words:
    """How the text names an output: a digit ("3") for MNIST, else a class ("3 (Dress)")."""

    def __init__(self, doc):
        self.classes = doc.get("classes") or [str(d) for d in range(len(doc["output_layer"]["activations"]))]
        self.mnist = doc.get("dataset", "mnist") == "mnist"
        self.kind = "digit" if self.mnist else "class"  # what an output neuron stands for
        self.title = "MNIST" if self.mnist else doc["dataset"]

    def name(self, d):
        return str(d) if self.mnist else f"{d} ({self.classes[d]})"


def _header(doc, words):
    """Which example, what the network says, the network, and the target."""
    m, out, name, kind = doc["model"], doc["output_layer"], words.name, words.kind
    src = doc.get("input") or {}
    if "image" in src:
        what = f"{shown_path(src['image'])} (true {kind} unknown)"
    elif "index" in src:
        what = f"{words.title} {src['split']} image {src['index']}, a {name(doc['label'])}"
    else:
        what = "the image" if doc["label"] is None else f"an image of a {name(doc['label'])}"
    p = doc["predicted"]
    hidden = f"{m['activation']} hidden units" if len(m["sizes"]) > 2 else "no hidden layer"
    why = {"label": f"its true {kind}", "prediction": f"the predicted {kind}, as the true one is unknown",
           "flag": "chosen with --target"}[doc["target_from"]]
    return [f"Explaining {what}: the network says {name(p)} (a = {out['activations'][p]:.4f})",
            f"Network {'-'.join(map(str, m['sizes']))}: {hidden}, {m['output']} output, {m['loss']} cost",
            f"Target: {name(doc['target'])}, {why}"]


def _output_layer(doc, words, s):
    """Each output's activation against its target, dC0/dz and its wish; the cost C0."""
    out, t, name, kind = doc["output_layer"], doc["target"], words.name, words.kind
    width = max(5, *(len(name(d)) for d in range(len(words.classes))))
    lines = [f"Output layer: each {kind}'s activation vs. what it should be (1 for {name(t)}, 0 for the others)",
             f"  {kind:>{width}}  activation  should be     dC0/dz  wish"]
    scale = max(abs(v) for v in out["dC0_dz"])
    for d, (a, y, g, dirn) in enumerate(zip(out["activations"], out["desired"], out["dC0_dz"],
                                            out["directions"])):
        mark = "  target" if d == t else ""
        lines.append(f"  {name(d):>{width}}  {a:>10.4f}  {y:>9.0f}  {_num(g)}  {s[dirn]} "
                     f"{_bar(g, scale, s):<{BAR_WIDTH}}{mark}".rstrip())
    lines.append(f"  Cost of this example: {_cost_formula(doc, s)} = {out['cost']:.4f}")
    lines.append(f"  dC0/dz is each output neuron's wish for its weighted input z: "
                 f"{s['up']} raise it (negative gradient), {s['down']} lower it.")
    return lines


def _zoom_in(doc, s):
    """The target's output neuron and its three levers: bias, weights, the activations feeding it."""
    zi, n_outputs = doc["zoom_in"], len(doc["output_layer"]["activations"])
    j, prev, fan_in = zi["neuron"], zi["previous_layer"], zi["fan_in"]
    prev_name = "the input pixels" if prev == 0 else f"the units of layer {prev}"
    b = zi["bias"]
    lines = [f"Zoom in on neuron {j}: three levers move its activation "
             f"(a = {zi['activation']:.4f}, should be 1; dC0/dz = {_num(zi['dC0_dz'], 0)})",
             f"  1. its bias: b = {b['value']:.4f}, dC0/db = dC0/dz = {_num(b['gradient'], 0)}  "
             f"{s[b['direction']]}",
             f"  2. its weights: the top {len(zi['weights'])} of {fan_in} by |dC0/dw|, where",
             f"     dC0/dw = a(L-1) {s['x']} dC0/dz = a(L-1) {s['x']} {_num(zi['dC0_dz'], 0)}: "
             "weights fed by strongly active units matter most"]
    rows = zi["weights"]
    scale = max([abs(r["gradient"]) for r in rows] + [0.0])
    width = max([len(_unit(prev, r["from"], fan_in)) for r in rows] + [4])
    lines.append(f"     {'from':<{width}}  {'a(L-1)':>9}  {'weight':>9}  {'dC0/dw':>9}")
    for r in rows:
        lines.append(f"     {_unit(prev, r['from'], fan_in):<{width}}  {r['activation']:>9.4f}  "
                     f"{r['weight']:>9.4f}  {_num(r['gradient'])}  {s[r['direction']]} "
                     f"{_bar(r['gradient'], scale, s)}".rstrip())
    lines.append(f"  3. the activations feeding it: {prev_name} it most wants to change,")
    lines.append(f"     dC0/da(L-1) = weight {s['x']} dC0/dz (the last column adds up the wishes of all "
                 f"{n_outputs} output neurons)")
    rows = zi["previous_activations"]
    scale = max([abs(r["gradient"]) for r in rows] + [0.0])
    width = max([len(_unit(prev, r["neuron"], fan_in)) for r in rows] + [4])
    lines.append(f"     {'unit':<{width}}  {'a(L-1)':>9}  {'weight':>9}  {'dC0/da':>9}  "
                 f"{'':<{BAR_WIDTH + 2}}  {'all outputs':>11}")
    for r in rows:
        lines.append(f"     {_unit(prev, r['neuron'], fan_in):<{width}}  {r['activation']:>9.4f}  "
                     f"{r['weight']:>9.4f}  {_num(r['gradient'])}  {s[r['direction']]} "
                     f"{_bar(r['gradient'], scale, s):<{BAR_WIDTH}}  {_num(r['gradient_all_outputs'], 11)}")
    if prev > 0:
        lines.append("     Activations are not set directly: these wishes pass back to the weights and biases")
        lines.append(f"     of layer {prev}, and on down, layer by layer: that is backpropagation.")
    else:
        lines.append("     The pixels are the input: nothing lies further back, so these wishes stop here.")
    lines.append(f"  {s['up']} = negative gradient: increase it; {s['down']} = positive: decrease it; "
                 "bar length = |gradient|.")
    return lines


def _zoom_out(zo, words, s):
    """A mini-batch's gradient layer by layer, its largest components, and one SGD step."""
    n_kinds = sum(1 for c in zo["digits"].values() if c)
    kinds = "digits" if words.mnist else "classes"
    which = f"all ten {kinds}" if n_kinds == 10 else f"{n_kinds} different {kinds}"
    lines = [f"Zoom out: the gradient over {zo['n']} examples ({zo['split']} images, {which})",
             "  Every output neuron's wishes, for every example, added up, passed back layer by layer",
             f"  and averaged over the {zo['n']} examples: the gradient {s['grad']}, {zo['n_params']:,} numbers.",
             f"  {'layer':>5}  {'weights':<10}  {'|dC/dW|':>9}  {'|dC/db|':>9}"]
    for layer in zo["layers"]:
        shape = f"{layer['shape'][0]}{s['x']}{layer['shape'][1]}"
        lines.append(f"  {layer['layer']:>5}  {shape:<10}  {_num(layer['W_norm'])}  {_num(layer['b_norm'])}")
    lines.append(f"  |{s['grad']}| = {_num(zo['norm'], 0)}; its largest components "
                 "(Wl[i,j]: from unit i of layer l-1 into neuron j of layer l):")
    scale = max([abs(c["gradient"]) for c in zo["largest"]] + [0.0])
    for c in zo["largest"]:
        name = f"{c['param']}{c['layer']}[{','.join(map(str, c['index']))}]"
        lines.append(f"    {name:<14} {_num(c['gradient'])}  {s[c['direction']]} "
                     f"{_bar(c['gradient'], scale, s)}".rstrip())
    lines.append(f"  One SGD step, w {s['get']} w {s['minus']} {s['eta']} {s['grad']}, "
                 f"with {s['eta']} = {zo['lr']:g}:")
    lines.append(f"    cost C before  {zo['cost_before']:.4f}")
    lines.append(f"    cost C after   {zo['cost_after']:.4f}   change {zo['change']:+.4f} "
                 f"(first-order estimate -{s['eta']}|{s['grad']}|{s['sq']} = {zo['predicted_change']:+.4f})")
    if zo["decreased"]:
        lines.append("    The cost went down: the step followed the negative gradient downhill.")
    else:
        lines.append(f"    The cost went up: {s['eta']} = {zo['lr']:g} oversteps here; "
                     "a smaller --lr follows the slope.")
    return lines
