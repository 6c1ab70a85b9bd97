"""``bp plot``: pictures of a training run, as PNG files.

From a run dir it draws

    learning_curves.png   loss and accuracy (train, validation) per epoch
    weights.png           each first-layer neuron's 784 incoming weights as a
                          28x28 image: the pattern of ink that excites it
    confusion.png         the test set's confusion matrix as a heat map
    misclassified.png     test digits the model gets wrong, true -> predicted

matplotlib is an optional extra (``pip install -e '.[plot]'``), imported only
inside these functions and used through its Agg canvas (no display, no
pyplot state). Files are written atomically, like every file bp writes.
"""

import errno
import json
import math
import os
import stat

import numpy as np

from .errors import BpError
from .fsutil import describe_mode, open_untrusted, shown_path, truncate

DPI = 100
INSTALL_HINT = "bp plot needs matplotlib: pip install -e '.[plot]' (or pip install matplotlib)"
MAX_WEIGHT_TILES = 256   # first-layer neurons drawn (16 x 16)
MISTAKE_GRID = (6, 10)   # rows, columns of misclassified digits
#: The per-epoch numbers the learning curves draw; each may be null.
PLOTTED = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
#: A metrics row is about 300 bytes: 64 MiB holds 200,000 epochs, 64 KiB a row with room to spare.
MAX_METRICS_BYTES = 64 * 2**20
MAX_ROW_BYTES = 64 * 2**10


def _matplotlib():
    """(Figure, FigureCanvasAgg, colors) or BpError (exit 1) saying how to install matplotlib."""
    try:
        from matplotlib import colors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise BpError(INSTALL_HINT) from None
    return Figure, FigureCanvasAgg, colors


def _save(fig, canvas_cls, path):
    """Render ``fig`` with Agg into ``path`` atomically; returns (width, height) in pixels."""
    from .fsutil import atomic_path

    canvas = canvas_cls(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return canvas.get_width_height()


# ---------------------------------------------------------------------------
# Reading a run


def read_metrics(run_dir):
    """The run's metrics.jsonl as a list of per-epoch dicts, every row checked.

    Each row must be a JSON object with an integer ``epoch``; the numbers
    plot draws (``PLOTTED``) must be numbers or null where present. NaN and
    infinities (JSON allows no such thing, but Python writes and reads the
    tokens NaN and Infinity) mean "no value": they come back as None, like
    null. Other keys are kept as they are.

    A bad row is an error, not a row skipped: bp writes metrics.jsonl whole,
    atomically, after every epoch, so a crash never leaves half a line. A
    line that does not parse means the file was edited or is not bp's, and
    curves drawn from the rest would look right while showing something
    else. The error names the file and the line, so it can be fixed.
    """
    path = os.path.join(run_dir, "metrics.jsonl")
    shown = shown_path(path)
    f, _ = open_untrusted(path, "metrics file", BpError, max_bytes=MAX_METRICS_BYTES,
                          hint=f"; {shown_path(run_dir)} is not a bp run dir with a finished epoch: "
                               "pass a folder written by bp train")
    rows = []
    with f:
        number = 0
        while True:
            line = f.readline(MAX_ROW_BYTES + 1)  # bounded: a 10 MB line is never read whole
            if not line:
                break
            number += 1
            if len(line) > MAX_ROW_BYTES:
                raise BpError(f"{shown} line {number} is over {MAX_ROW_BYTES:,} bytes; a bp metrics row "
                              "is a few hundred: the file is not bp's or is damaged")
            if line.strip():
                rows.append(_metrics_row(line, f"{shown} line {number}"))
    if not rows:
        raise BpError(f"{shown} holds no epochs; train the run for at least one epoch")
    return rows


def _metrics_row(line, where):
    """One line of metrics.jsonl (bytes) -> its dict, checked; BpError naming ``where``."""
    fix = "fix or remove that line, or train the run again"
    try:
        # parse_constant sees only NaN, Infinity and -Infinity: no value
        row = json.loads(line.decode("utf-8"), parse_constant=lambda token: None)
    except UnicodeDecodeError:
        raise BpError(f"{where} is not UTF-8 text; {fix}") from None
    except json.JSONDecodeError as err:
        raise BpError(f"{where} is not JSON ({err.msg}, column {err.colno}); {fix}") from None
    except RecursionError:
        raise BpError(f"{where} is not a metrics row (nested too deeply); {fix}") from None
    if not isinstance(row, dict):
        raise BpError(f"{where} is a JSON {_json_type(row)}, not an object of one epoch's metrics; {fix}")
    epoch = row.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        got = "missing" if "epoch" not in row else _shown_value(epoch)
        raise BpError(f"{where}: epoch is {got}, not a whole number; {fix}")
    for key in PLOTTED:
        value = row.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise BpError(f"{where}: {key} is {_shown_value(value)}, not a number; {fix}")
        if not math.isfinite(value):
            row[key] = None  # 1e999 parses as inf
    return row


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown_value(value):
    """A parsed JSON value as a message shows it: short, one line, with its JSON type."""
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return f"an {_json_type(value)}"
    return f"{truncate(json.dumps(value), 40)} (a {_json_type(value)})"


def _json_type(value):
    """The JSON name of a parsed value's type: string, array, object, boolean, null, number."""
    for kind, name in ((bool, "boolean"), (str, "string"), (list, "array"), (dict, "object"),
                       (type(None), "null"), ((int, float), "number")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def check_run_dir(run_dir):
    """BpError unless ``run_dir`` is a folder (not a file, a FIFO, a loop, nothing)."""
    shown = shown_path(run_dir)
    hint = "pass a folder written by bp train (e.g. runs/latest)"
    try:
        mode = os.stat(run_dir).st_mode
    except FileNotFoundError:
        raise BpError(f"run dir {shown} not found; {hint}") from None
    except OSError as err:
        reason = ("is a symbolic link that loops back on itself" if err.errno == errno.ELOOP
                  else f"cannot be read: {err.strerror or err}")
        raise BpError(f"run dir {shown} {reason}; {hint}") from None
    if not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else describe_mode(mode)
        raise BpError(f"run dir {shown} is {kind}, not a folder; {hint}")


# ---------------------------------------------------------------------------
# The pictures: each takes arrays and a path, returns (width, height)


def plot_learning_curves(metrics, path, title="learning curves"):
    Figure, Canvas, _ = _matplotlib()
    fig = Figure(figsize=(10, 4), dpi=DPI)
    epochs = [m["epoch"] for m in metrics]
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key, name in ((ax_loss, "loss", "loss (cost C)"), (ax_acc, "accuracy", "accuracy")):
        for split, style in (("train", "o-"), ("val", "s--")):
            values = [m.get(f"{split}_{key}") for m in metrics]
            points = [(e, v) for e, v in zip(epochs, values) if v is not None]
            if points:
                ax.plot(*zip(*points), style, label="train" if split == "train" else "validation",
                        markersize=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    val = [(m["epoch"], m["val_accuracy"]) for m in metrics if m.get("val_accuracy") is not None]
    if val:
        best_epoch, best = max(val, key=lambda p: p[1])
        ax_acc.axvline(best_epoch, color="grey", linewidth=0.8, linestyle=":")
        ax_acc.set_title(f"best validation {best:.2%} (epoch {best_epoch})", fontsize=10)
    last = metrics[-1].get("train_loss")  # None: the row had none, or NaN
    ax_loss.set_title("final train loss " + ("not recorded" if last is None else f"{last:.4f}"), fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, Canvas, path)


def weight_mosaic(W0, tiles=MAX_WEIGHT_TILES, gap=1):
    """First-layer weights W0 (784, h) -> one 2-D image of 28x28 tiles, NaN between them.

    Each tile is scaled by its own largest |w| to [-1, 1], so every neuron's
    pattern shows whatever its overall size.
    """
    n = min(W0.shape[1], tiles)
    cols = 5 if n == 10 else int(np.ceil(np.sqrt(n)))  # ten output neurons: two rows of five
    rows = int(np.ceil(n / cols))
    size = 28 + gap
    mosaic = np.full((rows * size - gap, cols * size - gap), np.nan)
    for k in range(n):
        w = W0[:, k].astype(np.float64)
        top = np.abs(w).max()
        r, c = divmod(k, cols)
        mosaic[r * size:r * size + 28, c * size:c * size + 28] = (w / top if top > 0 else w).reshape(28, 28)
    return mosaic, n


def plot_weights(W0, path, title=None):
    Figure, Canvas, _ = _matplotlib()
    mosaic, n = weight_mosaic(W0)
    # about 2 screen pixels per weight: 8 inches up to 13 tiles a row, wider beyond
    width = max(8.0, mosaic.shape[1] * 2 / DPI / 0.96)
    height = width * mosaic.shape[0] / mosaic.shape[1] + 0.9
    fig = Figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0.02, 0.02 * 8 / height, 0.96, 1 - 0.9 / height - 0.02 * 8 / height))
    from matplotlib import colormaps

    cmap = colormaps["RdBu_r"].with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    total = W0.shape[1]
    shown = f"all {total}" if n == total else f"the first {n} of {total}"
    fig.suptitle(title or f"first-layer weights: {shown} neurons, 28x28 each\n"
                          "red: ink here excites the neuron, blue: ink here inhibits it", fontsize=11)
    return _save(fig, Canvas, path)


def plot_confusion(confusion, path, title="confusion matrix (test set)", classes=None, noun="digit"):
    """The confusion matrix on a log colour scale; ``classes`` name the ticks (default 0..k-1)."""
    Figure, Canvas, colors = _matplotlib()
    C = np.asarray(confusion)
    k = len(C)
    fig = Figure(figsize=(7, 6), dpi=DPI)
    ax = fig.add_subplot()
    # a log scale, so the off-diagonal mistakes (tens) show next to the diagonal (~1000)
    shown = np.ma.masked_equal(C, 0)
    image = ax.imshow(shown, cmap="Blues", norm=colors.LogNorm(vmin=1, vmax=max(int(C.max()), 2)))
    fig.colorbar(image, ax=ax, label="images (log scale)")
    names = [str(c) for c in (classes or range(k))]
    ax.set_xticks(range(k), names, rotation=0 if max(map(len, names)) <= 2 else 45,
                  ha="center" if max(map(len, names)) <= 2 else "right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel(f"predicted {noun}")
    ax.set_ylabel(f"true {noun}")
    dark = max(int(C.max()), 1) ** 0.7  # white text only on the darker cells of the log scale
    for i in range(k):
        for j in range(k):
            if C[i, j]:
                ax.text(j, i, str(int(C[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if C[i, j] > dark else "black")
    accuracy = np.trace(C) / C.sum() if C.sum() else float("nan")
    ax.set_title(f"{title}: accuracy {accuracy:.2%}", fontsize=11)
    fig.tight_layout()
    return _save(fig, Canvas, path)


def plot_misclassified(images, y_true, y_pred, indices, path, total=None, grid=MISTAKE_GRID, classes=None,
                       noun="digit"):
    """A grid of digits (uint8 (n, 784)) labelled '#index true->pred', in the order given;
    ``classes`` name the labels (default their numbers), ``noun`` says what an image shows.

    One image (a mosaic with a label strip above each digit) rather than one
    axes per digit: several times faster to draw.
    """
    Figure, Canvas, _ = _matplotlib()
    rows, cols = grid
    n = min(len(images), rows * cols)
    label, gap = 9, 3                       # pixel rows for the label strip, pixels between digits
    cell_h, cell_w = label + 28 + gap, 28 + gap
    mosaic = np.zeros((rows * cell_h, cols * cell_w))
    for k in range(n):
        r, c = divmod(k, cols)
        top, left = r * cell_h + label, c * cell_w
        mosaic[top:top + 28, left:left + 28] = np.asarray(images[k], dtype=np.float64).reshape(28, 28)
    fig = Figure(figsize=(cols * 1.1, rows * 1.1 * cell_h / cell_w + 0.5), dpi=DPI)
    ax = fig.add_axes((0.005, 0.005, 0.99, 1 - 0.5 / fig.get_figheight()))
    ax.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    names = [str(c) for c in classes] if classes else None
    for k in range(n):
        r, c = divmod(k, cols)
        if names:
            text = f"#{indices[k]}\n{names[y_true[k]]}\u2192{names[y_pred[k]]}"
            size = 8 if max(len(names[y_true[k]]), len(names[y_pred[k]])) <= 2 else 4.5
        else:
            text, size = f"#{indices[k]}  {y_true[k]}\u2192{y_pred[k]}", 8
        ax.text(c * cell_w + 14, r * cell_h + label - 2, text if size == 4.5 else text.replace("\n", "  "),
                ha="center", va="bottom", fontsize=size, color="firebrick")
    total = n if total is None else total
    if total == 0:
        heading = f"misclassified test {noun}s: none, every test {noun} is classified correctly"
    else:
        heading = (f"misclassified test {noun}s: {total:,} in all, the first {n} shown as "
                   "#index true\u2192predicted (see: bp explain --index N)")
    fig.suptitle(heading, fontsize=10, y=1 - 0.1 / fig.get_figheight())
    return _save(fig, Canvas, path)


# ---------------------------------------------------------------------------
# A whole run


def plot_run(run_dir, out_dir=None, *, checkpoint=None, data_dir=None, data=None, mirrors=None, offline=None):
    """Draw the four pictures of ``run_dir`` into ``out_dir`` (default run_dir/plots),
    from ``checkpoint`` (default: the run's best.npz, else its last.npz).

    The test set comes from ``data`` (an ``MNIST`` tuple) or is loaded from
    ``data_dir`` (see ``data.load_mnist_for`` for the default). Returns a list of
    ``{"name", "path", "width", "height"}``, one per PNG. mirrors, offline: as
    for ``download.ensure_mnist``, when the test set must be fetched. Labels are
    named as the run's dataset names them ("Sneaker" for Fashion-MNIST).
    """
    _matplotlib()  # fail before any work when it is missing
    from .checkpoint import load_model
    from .metrics import confusion_matrix, predict
    from .rundir import locate_model

    check_run_dir(run_dir)
    ckpt = checkpoint or locate_model(run_dir)[0]  # the one rule: a run dir means its best.npz
    model = load_model(ckpt)
    metrics = read_metrics(run_dir)
    if data is None:
        from .data import load_mnist_for

        data = load_mnist_for(model.meta.get("config", {}), data_dir, split="test",  # only test is drawn
                              mirrors=mirrors, offline=offline)
    from .datasets import of_config

    dataset = of_config(model.meta.get("config", {}))
    out_dir = out_dir or os.path.join(run_dir, "plots")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise BpError(f"cannot create {shown_path(out_dir)}: {err.strerror or err}; choose another --out") from None

    X, y = data.test_images, data.test_labels
    y_pred = predict(model.Ws, model.bs, model.spec, X).argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y)
    first = wrong[:MISTAKE_GRID[0] * MISTAKE_GRID[1]]
    sizes = "-".join(map(str, model.spec.sizes))
    written = []
    for name, draw in (
        ("learning_curves", lambda p: plot_learning_curves(metrics, p, title=f"{run_dir}: {sizes}")),
        ("weights", lambda p: plot_weights(model.Ws[0], p, title=None if len(model.Ws) > 1 else
                                           "no hidden layer: the weights into output neurons 0-9\n"
                                           "red: ink here raises the digit, blue: ink here lowers it")),
        ("confusion", lambda p: plot_confusion(confusion_matrix(y, y_pred, model.spec.sizes[-1]), p,
                                               title=f"confusion matrix, {os.path.basename(ckpt)} on "
                                                     f"{dataset.title} test", classes=dataset.classes,
                                               noun=dataset.noun)),
        ("misclassified", lambda p: plot_misclassified(X[first], y[first], y_pred[first], first, p,
                                                       total=len(wrong), classes=dataset.classes,
                                                       noun=dataset.noun)),
    ):
        path = os.path.join(out_dir, f"{name}.png")
        width, height = draw(path)
        written.append({"name": name, "path": path, "width": int(width), "height": int(height)})
    return written
