"""Checkpoints: self-describing ``.npz`` files that rebuild a model alone.

Layout (every entry a plain numeric array, so ``numpy.load(allow_pickle=False)``
reads it and loading never unpickles)::

    W0, b0, W1, b1, ...     weights (fan_in, fan_out) and biases per layer
    opt.<name>              optimizer state (velocities, Adam moments)
    meta                    uint8 bytes of a JSON document: format version,
                            bp version, resolved config, layer sizes, epoch,
                            metrics history, RNG state

Writes are atomic: a temp file in the same folder, then a rename.
"""

import json
import zipfile
from dataclasses import dataclass, field

import numpy as np

from . import __version__
from .errors import CheckpointError
from .fsutil import atomic_path
from .metrics import predict
from .network import Spec

FORMAT = "bp-checkpoint"
FORMAT_VERSION = 1


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


def read_checkpoint(path, arrays=True):
    """Load (arrays, meta) with every check a user's file may fail, as CheckpointError.
    arrays=False reads only the metadata (the arrays dict comes back empty)."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != b"PK\x03\x04":  # every .npz is a zip archive
            what = "an empty file" if not magic else "not an .npz archive"
            raise CheckpointError(f"checkpoint {path} is not a bp checkpoint: {what}; "
                                  "pass a best.npz or last.npz written by bp train")
        with np.load(path, allow_pickle=False) as npz:
            wanted = npz.files if arrays else [name for name in npz.files if name == "meta"]
            arrays = {name: npz[name] for name in wanted}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} not found; train one with 'bp train' "
                              "or pass the path of a .npz file") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a directory; pass its best.npz or last.npz") from None
    except ValueError as err:
        # numpy refuses object arrays (pickles) with allow_pickle=False, and says so
        reason = "it holds pickled objects, which bp never loads" if "pickle" in str(err) else str(err)
        raise CheckpointError(f"checkpoint {path} is not a bp checkpoint: {reason}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated ({type(err).__name__}); "
                              "use another checkpoint, e.g. the run's last.npz") from None
    if "meta" not in arrays or arrays["meta"].dtype != np.uint8:
        raise CheckpointError(f"checkpoint {path} has no bp metadata; it was not written by bp")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint {path} has corrupt metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} was not written by bp")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {meta.get('format_version')!r}, this bp "
            f"({__version__}) reads version {FORMAT_VERSION}; retrain, or use the bp that wrote it")
    return arrays, meta


def load_model(path):
    """Rebuild the model a checkpoint describes, checking its arrays against its metadata."""
    arrays, meta = read_checkpoint(path)
    try:
        sizes = [int(n) for n in meta["sizes"]]
        model_cfg = meta["config"]["model"]
        spec = Spec(sizes, model_cfg["activation"], model_cfg["output"], model_cfg["loss"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} metadata is missing {err}; it is incomplete") from None
    Ws, bs = [], []
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W, b = arrays.get(f"W{l}"), arrays.get(f"b{l}")
        if W is None or b is None:
            raise CheckpointError(f"checkpoint {path} lacks the weights of layer {l + 1}; it is incomplete")
        if W.shape != (fan_in, fan_out) or b.shape != (fan_out,):
            raise CheckpointError(f"checkpoint {path}: layer {l + 1} has shape {W.shape} but its metadata "
                                  f"says {(fan_in, fan_out)}; the file is inconsistent")
        if W.dtype.kind != "f" or b.dtype.kind != "f":
            raise CheckpointError(f"checkpoint {path}: layer {l + 1} holds {W.dtype}/{b.dtype} values, "
                                  "not floating point; the file is not a bp model")
        Ws.append(W)
        bs.append(b)
    return Model(spec, Ws, bs, meta)
