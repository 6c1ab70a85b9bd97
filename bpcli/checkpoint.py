"""Checkpoints: self-describing ``.npz`` files that rebuild a model alone.

Layout (every entry a plain numeric array, so ``numpy.load(allow_pickle=False)``
reads it and loading never unpickles)::

    W0, b0, W1, b1, ...     weights (fan_in, fan_out) and biases per layer
    opt.<name>              optimizer state (velocities, Adam moments)
    meta                    uint8 bytes of a JSON document: format version,
                            bp version, resolved config, layer sizes, epoch,
                            metrics history, RNG state

Writes are atomic: a temp file in the same folder, then a rename.

Reading treats the file as untrusted input, validated like a config before
anything is spent on it: the zip directory is read first and only the
members bp knows are opened (anything else in the archive stays unread);
the metadata is size- and depth-capped and its config checked by the same
rules as a config file; every array's ``.npy`` header must declare exactly
the dtype and shape the validated metadata implies before its data is read,
so no member can make bp allocate more than the model it describes.
"""

import json
import math
import re
import struct
import zipfile
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .config import from_values
from .errors import CheckpointError, ConfigError
from .fsutil import atomic_path, open_untrusted, shown, shown_path, truncate
from .metrics import predict
from .network import Spec

FORMAT = "bp-checkpoint"
FORMAT_VERSION = 1

# The file, and everything bp reads out of it uncompressed. The largest model
# shipped (configs/best.yaml, 784-1500-1000-500-10, 3.2M parameters) makes a
# 13 MB best.npz and a 39 MB last.npz with Adam's two moment vectors; 1 GiB
# is 25 times that, room for far wider nets, and still a file bp can hold in
# memory. A compressed member could inflate past the file's size, so the cap
# also bounds the sum of the arrays' declared sizes.
MAX_BYTES = 1 << 30
# The JSON metadata: the metrics history grows by ~250 bytes an epoch (44 kB
# for 180 epochs); 4 MiB holds over 15,000 epochs.
MAX_META_BYTES = 4 << 20
MAX_META_DEPTH = 32           # real metadata nests 4 deep (meta.config.train.augment)
MAX_DIRECTORY_BYTES = 4 << 20  # the zip's central directory: tens of thousands of members
MAX_NPY_HEADER = 10_000       # numpy's own default limit for a .npy header

# Weights and optimizer state are float32, what bp trains and writes; either
# byte order is accepted (a file written on a big-endian machine) and read
# into the native one. Nothing else is: a float64 or integer "model" was not
# written by bp, and silently casting it would hide that.
FLOAT32 = (np.dtype("<f4"), np.dtype(">f4"))

_WHAT = "checkpoint"
_HINT = "; pass a best.npz or last.npz written by bp train"


def _fail(path, message):
    return CheckpointError(f"checkpoint {shown_path(path)} {message}")


@dataclass
class Model:
    """Weights plus what they mean: what ``bp evaluate`` and ``bp predict`` need."""

    spec: Spec
    Ws: list
    bs: list
    meta: dict = field(default_factory=dict)

    def predict_proba(self, X):
        """X (n, 784), uint8 pixels or floats in [0, 1] -> class probabilities (n, 10).

        Softmax outputs are probabilities already. Sigmoid outputs are independent
        scores in [0, 1]: they are normalised to sum to 1, so every model reports
        comparable numbers (the ranking is unchanged)."""
        A = predict(self.Ws, self.bs, self.spec, X)
        if self.spec.output == "sigmoid":
            A /= np.maximum(A.sum(axis=1, keepdims=True), 1e-12)
        return A


def save_checkpoint(path, Ws, bs, meta, opt_state=None):
    arrays = {}
    for l, (W, b) in enumerate(zip(Ws, bs)):
        arrays[f"W{l}"] = W
        arrays[f"b{l}"] = b
    for name, arr in (opt_state or {}).items():
        arrays[f"opt.{name}"] = arr
    meta = dict(meta, format=FORMAT, format_version=FORMAT_VERSION, bp_version=__version__)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


# ---------------------------------------------------------------------------
# Reading: the archive, its metadata, its arrays

def read_checkpoint(path, arrays=True, opt_state=None):
    """Load (arrays, meta) with every check a user's file may fail, as CheckpointError.

    The metadata is always validated (format, config by the config file's
    rules, layer sizes). arrays=True reads the weights and biases the sizes
    call for; arrays=False only the metadata (the arrays dict comes back
    empty). ``opt_state`` ({name: template array}, an optimizer's
    ``state()``) also reads each ``opt.<name>``, which must match its
    template's shape and dtype. Nothing else in the archive is read.
    """
    path = str(path)
    f, size = open_untrusted(path, _WHAT, CheckpointError, max_bytes=MAX_BYTES, hint=_HINT)
    with f:
        try:
            magic = f.read(4)  # a file that fails to read (/proc/self/mem) fails here: below
            if magic != b"PK\x03\x04":  # every .npz is a zip archive
                what = "an empty file" if not magic else "not an .npz archive"
                raise _fail(path, f"is not a bp checkpoint: {what}{_HINT}")
            _check_directory(f, size, path)
            with zipfile.ZipFile(f) as zf:
                members = _members(zf, path)
                meta = _read_meta(zf, members, path)
                if not arrays:
                    return {}, meta
                wanted = _layer_arrays(meta["sizes"])
                for name, template in (opt_state or {}).items():
                    wanted[f"opt.{name}"] = (template.shape, (template.dtype.newbyteorder("<"),
                                                              template.dtype.newbyteorder(">")))
                total = sum(math.prod(shape) * dtypes[0].itemsize for shape, dtypes in wanted.values())
                if total > MAX_BYTES:
                    raise _fail(path, f"describes {total:,} bytes of arrays, over bp's limit of "
                                      f"{MAX_BYTES:,}; it is not a model bp can load")
                loaded = {}
                for name, (shape, dtypes) in wanted.items():
                    if name not in members:
                        raise _missing(path, name)
                    loaded[name] = _read_array(zf, name, members[name], shape, dtypes, path)
                for name, arr in loaded.items():
                    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                        raise _fail(path, f"holds nan or inf values in {name}: the run that wrote it "
                                          "diverged; use an earlier checkpoint or retrain with a lower --lr")
        except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
                RuntimeError, ValueError) as err:
            # RuntimeError: an encrypted member; NotImplementedError: an unknown compression
            raise _fail(path, f"is unreadable or truncated ({type(err).__name__}: "
                              f"{truncate(err, 80)}); use another checkpoint, e.g. the run's last.npz") from None
    return loaded, meta


def _check_directory(f, size, path):
    """Refuse a zip whose central directory is too big to list, before zipfile lists it.

    zipfile reads the whole directory into ZipInfo objects (hundreds of bytes
    each); a forged file could declare millions of members. The end record
    is found the way zipfile finds it; a ZIP64 end record (only needed past
    65,535 members or 4 GiB) is refused, bp never writes one.
    """
    tail_size = min(size, 22 + 0xFFFF)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\0\0":
        at = len(tail) - 22
    else:
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise _fail(path, f"is unreadable or truncated (no zip directory){_HINT}")
    if at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":
        raise _fail(path, f"is a ZIP64 archive, which bp never writes{_HINT}")
    directory_bytes = struct.unpack("<L", tail[at + 12:at + 16])[0]
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise _fail(path, f"lists {directory_bytes:,} bytes of archive members, over bp's limit "
                          f"of {MAX_DIRECTORY_BYTES:,}{_HINT}")
    f.seek(0)


_KNOWN = re.compile(r"(meta|[Wb](0|[1-9][0-9]{0,5})|opt\.[A-Za-z0-9_]{1,32})\.npy")


def _members(zf, path):
    """{name without .npy: ZipInfo} of the members bp knows; the rest are never opened."""
    members = {}
    for info in zf.infolist():
        if not _KNOWN.fullmatch(info.filename):
            continue
        name = info.filename[:-len(".npy")]
        if name in members:
            raise _fail(path, f"holds two members named {name}; the file was tampered with")
        members[name] = info
    return members


def _missing(path, name):
    if name.startswith("opt."):
        return _fail(path, f"lacks the optimizer state {name}; it cannot be resumed "
                           "(best.npz cannot be resumed: use last.npz)")
    return _fail(path, f"lacks the weights of layer {int(name[1:]) + 1} ({name}); it is incomplete")


def _read_header(fp, name, path):
    """(shape, fortran_order, dtype) from a member's .npy header, its data not yet read."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            return fmt.read_array_header_1_0(fp, max_header_size=MAX_NPY_HEADER)
        if version == (2, 0):
            return fmt.read_array_header_2_0(fp, max_header_size=MAX_NPY_HEADER)
    except ValueError as err:
        reason = "it holds pickled objects, which bp never loads" if "pickle" in str(err) else truncate(err, 80)
        raise _fail(path, f"is not a bp checkpoint: member {name} has a bad .npy header ({reason})") from None
    raise _fail(path, f"is not a bp checkpoint: member {name} has .npy format version {version}")


def _read_array(zf, name, info, shape, dtypes, path):
    """One member, checked against its expected shape and dtypes before its data is read."""
    with zf.open(info) as fp:
        got_shape, fortran, dtype = _read_header(fp, name, path)
        if dtype.hasobject:
            raise _fail(path, f"is not a bp checkpoint: {name} holds pickled objects, which bp never loads")
        if got_shape != shape:
            raise _fail(path, f"holds {name} of shape {truncate(got_shape, 60)} but its metadata says "
                              f"{shape}; the file is inconsistent")
        if dtype not in dtypes:
            raise _fail(path, f"holds {name} as {truncate(dtype, 40)} values, not {dtypes[0].name}; "
                              "the file is not a bp model")
        arr = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
        view = memoryview(arr.reshape(-1)).cast("B")
        done = 0
        while done < len(view):
            n = fp.readinto(view[done:])
            if not n:
                raise _fail(path, f"is truncated inside {name}; use another checkpoint, e.g. the run's last.npz")
            done += n
        if fp.read(1):  # also reaches the end, where zipfile checks the member's CRC
            raise _fail(path, f"holds more data in {name} than its header declares; the file is inconsistent")
    if fortran:
        arr = np.ascontiguousarray(arr.T)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def _read_meta(zf, members, path):
    info = members.get("meta")
    if info is None:
        raise _fail(path, "has no bp metadata; it was not written by bp")
    with zf.open(info) as fp:
        shape, _, dtype = _read_header(fp, "meta", path)
        if dtype != np.uint8 or len(shape) != 1:
            raise _fail(path, "has no bp metadata; it was not written by bp")
        if shape[0] > MAX_META_BYTES:
            raise _fail(path, f"has {shape[0]:,} bytes of metadata, over bp's limit of {MAX_META_BYTES:,}; "
                              "it was not written by bp")
        raw = fp.read(shape[0])
    if len(raw) != shape[0]:
        raise _fail(path, "is truncated inside its metadata; use another checkpoint, e.g. the run's last.npz")
    try:
        text = raw.decode("utf-8")
        if _json_depth(text) > MAX_META_DEPTH:
            raise _fail(path, f"has metadata nested over {MAX_META_DEPTH} levels deep; it was not written by bp")
        meta = json.loads(text)
    except (UnicodeDecodeError, ValueError):  # ValueError: bad JSON, or an integer of 5,000 digits
        raise _fail(path, "has corrupt metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, "was not written by bp")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _fail(path, f"has format version {truncate(repr(meta.get('format_version')), 40)}, this bp "
                          f"({__version__}) reads version {FORMAT_VERSION}; retrain, or use the bp that wrote it")
    config = checked_config(meta, path)
    meta["config"] = config.values  # every key present, each valid
    epoch = meta.get("epoch")  # shown by the page and in an ONNX file's metadata
    if epoch is not None and not (_is_int(epoch) and epoch >= 0):
        raise _fail(path, f"metadata has a bad 'epoch', {shown(epoch)}: not a whole number >= 0; "
                          "the file is inconsistent")
    sizes = meta.get("sizes")
    if sizes is None:
        raise _fail(path, "metadata has no layer sizes; it is incomplete")
    expected = [784, *config.recipe.model.hidden, 10]
    if sizes != expected or not all(type(n) is int for n in sizes):
        raise _fail(path, f"metadata has layer sizes {truncate(repr(sizes), 60)}, but its config's "
                          f"model.hidden makes {truncate(expected, 60)}; the file is inconsistent")
    return meta


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json_depth(text):
    """How deeply ``text``'s arrays and objects nest, counted without recursion
    (json.loads of 100,000 nested lists would hit Python's recursion limit)."""
    depth = deepest = 0
    for c in _JSON_STRING.sub("", text):
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def checked_config(meta, path):
    """The checkpoint's config as a Config, by the same rules as a config file."""
    if "config" not in meta:
        raise _fail(path, "metadata has no config; it is incomplete")
    try:
        return from_values(meta["config"], f"checkpoint {shown_path(path)}")
    except ConfigError as err:
        raise CheckpointError(truncate(err, 300)) from None


def _layer_arrays(sizes):
    wanted = {}
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        wanted[f"W{l}"] = ((fan_in, fan_out), FLOAT32)
        wanted[f"b{l}"] = ((fan_out,), FLOAT32)
    return wanted


def load_model(path):
    """Rebuild the model a checkpoint describes, checking its arrays against its metadata."""
    arrays, meta = read_checkpoint(path)
    m = meta["config"]["model"]
    spec = Spec(meta["sizes"], m["activation"], m["output"], m["loss"])
    layers = range(len(spec.sizes) - 1)
    return Model(spec, [arrays[f"W{l}"] for l in layers], [arrays[f"b{l}"] for l in layers], meta)


def check_outputs(P, path):
    """Refuse (CheckpointError) a model whose probabilities ``P`` are not all numbers:
    finite weights whose outputs overflow. evaluate, export and the page refuse it alike."""
    if not np.isfinite(P).all():
        raise CheckpointError(f"the outputs of {shown_path(path)} are not numbers: the model has diverged; "
                              "train it again with a lower --lr")


# ---------------------------------------------------------------------------
# Resuming: the training state in a last.npz

def _is_int(v):
    return type(v) is int


def _is_number(v):
    return type(v) in (int, float) and math.isfinite(v)


def check_rng_state(state):
    """None if ``state`` is a PCG64 state numpy accepts, else what is wrong with it."""
    if not isinstance(state, dict) or set(state) != {"bit_generator", "state", "has_uint32", "uinteger"}:
        return "is not a random generator state"
    inner = state["state"]
    if state["bit_generator"] != "PCG64" or not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
        return "is not a PCG64 generator state"
    if not all(_is_int(inner[k]) and 0 <= inner[k] < 2**128 for k in ("state", "inc")):
        return "has a PCG64 state or increment outside 0 to 2**128 - 1"
    if state["has_uint32"] not in (0, 1) or not _is_int(state["has_uint32"]) \
            or not (_is_int(state["uinteger"]) and 0 <= state["uinteger"] < 2**32):
        return "has a cached value outside its range"
    try:  # the last word is numpy's: it is what restore will do
        np.random.PCG64().state = state
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        return f"is refused by numpy ({truncate(err, 60)})"
    return None


def check_training_state(meta, arrays, path, *, steps_per_epoch, n_train):
    """Refuse (CheckpointError) a last.npz whose training state a resume cannot continue from.

    ``meta`` and ``arrays`` are what read_checkpoint returned (config, sizes,
    and the optimizer arrays' names, shapes and dtypes already checked);
    ``steps_per_epoch`` and ``n_train`` are the resumed run's. Checks what
    Run.restore takes over, one part at a time (each check below returns the
    key at fault and what is wrong, or None).
    """
    run = {"steps_per_epoch": steps_per_epoch, "n_train": n_train}
    for check in (_state_present, _position, _history, _best, _partial, _times, _rng_states, _adam_state):
        found = check(meta, arrays, **run)
        if found:
            key, problem = found
            raise _fail(path, f"has a bad training state: '{key}' {problem}; it cannot be resumed "
                              "(best.npz cannot be resumed: use the run's last.npz)")


def _state_present(meta, arrays, **run):
    missing = [k for k in ("epoch", "step", "metrics", "best", "partial", "train_seconds", "rng", "epoch_rng")
               if k not in meta]
    return (missing[0], "is missing") if missing else None


def _position(meta, arrays, *, steps_per_epoch, **run):
    """Where in training it stopped: epochs done, and the step within the next."""
    epochs = meta["config"]["train"]["epochs"]
    epoch, step = meta["epoch"], meta["step"]
    if not (_is_int(epoch) and 0 <= epoch <= epochs):
        return "epoch", f"must be a whole number from 0 to train.epochs ({epochs}), got {shown(epoch)}"
    if not (_is_int(step) and 0 <= step < steps_per_epoch):
        return "step", f"must be a whole number from 0 to {steps_per_epoch - 1} (batches per epoch), got {shown(step)}"
    return None


def _history(meta, arrays, **run):
    """One metrics entry per epoch done, in order."""
    metrics, epoch = meta["metrics"], meta["epoch"]
    if not isinstance(metrics, list) or len(metrics) != epoch:
        return "metrics", f"must list one entry per completed epoch ({epoch})"
    for i, m in enumerate(metrics):
        if not isinstance(m, dict) or m.get("epoch") != i + 1:
            return "metrics", f"entry {i + 1} is not the metrics of epoch {i + 1}"
    return None


def _best(meta, arrays, **run):
    """The best epoch so far and its validation accuracy (null when nothing is held out)."""
    best, epoch = meta["best"], meta["epoch"]
    validating = meta["config"]["data"]["validation"] > 0
    if epoch == 0:
        if best is not None:
            return "best", f"must be null before the first epoch ends, got {shown(best)}"
    elif not (isinstance(best, dict) and set(best) == {"epoch", "val_accuracy"}
              and _is_int(best["epoch"]) and 1 <= best["epoch"] <= epoch):
        return "best", f"must be {{epoch: 1 to {epoch}, val_accuracy}}, got {shown(best)}"
    elif validating and not (_is_number(best["val_accuracy"]) and 0 <= best["val_accuracy"] <= 1):
        return "best", f"val_accuracy must be a fraction from 0 to 1, got {shown(best['val_accuracy'])}"
    elif not validating and best["val_accuracy"] is not None:
        return "best", (f"val_accuracy must be null (the run holds out no validation images), "
                        f"got {shown(best['val_accuracy'])}")
    return None


def _partial(meta, arrays, *, n_train, **run):
    """The tallies of the epoch under way."""
    partial = meta["partial"]
    if not isinstance(partial, dict) or set(partial) != {"loss_sum", "correct", "seen", "seconds"}:
        return "partial", f"must be {{loss_sum, correct, seen, seconds}}, got {shown(partial)}"
    if not all(_is_number(partial[k]) and partial[k] >= 0 for k in ("loss_sum", "seconds")):
        return "partial", f"loss_sum and seconds must be finite numbers >= 0, got {shown(partial)}"
    if not (_is_int(partial["seen"]) and _is_int(partial["correct"])
            and 0 <= partial["correct"] <= partial["seen"] <= n_train):
        return "partial", f"must have 0 <= correct <= seen <= {n_train} (training images), got {shown(partial)}"
    return None


def _times(meta, arrays, **run):
    """The training time so far, and the thread count it ran on."""
    if not (_is_number(meta["train_seconds"]) and meta["train_seconds"] >= 0):
        return "train_seconds", f"must be a finite number >= 0, got {shown(meta['train_seconds'])}"
    threads = meta.get("threads")
    if threads is not None and not (_is_int(threads) and threads >= 1):
        return "threads", f"must be null or a whole number >= 1, got {shown(threads)}"
    return None


def _rng_states(meta, arrays, **run):
    """The training stream, and mid-epoch the state this epoch's order is redrawn from."""
    problem = check_rng_state(meta["rng"])
    if problem:
        return "rng", problem
    if meta["epoch_rng"] is not None or meta["step"] > 0:
        problem = check_rng_state(meta["epoch_rng"])
        if problem:
            return "epoch_rng", problem
    return None


def _adam_state(meta, arrays, **run):
    """Adam's step count and running mean of g**2 (SGD's velocity may be negative)."""
    if "opt.t" not in arrays:
        return None
    if not 0 <= int(arrays["opt.t"]) <= 2**53:
        return "opt.t", f"(Adam's step count) must be >= 0, got {int(arrays['opt.t'])}"
    for name in ("opt.v0", "opt.v1"):
        if name in arrays and (arrays[name] < 0).any():
            return name, "(Adam's mean squared gradient) holds negative values"
    return None
