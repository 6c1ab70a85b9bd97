"""bp's Python API: a trained model from a notebook or a script, as scikit-learn would have it.

    import bpcli
    model = bpcli.load_model("runs/latest")         # a run dir or a checkpoint
    x = bpcli.prepare_image("digit.png")            # (28, 28) uint8, what the model sees
    model.predict(x[None])                          # array([7])
    model.predict_proba(images)                     # (n, 10), rows sum to 1

``bpcli.load_model`` and ``bpcli.prepare_image`` are thin wrappers (in
``bpcli/__init__.py``) around the functions here, so that ``import bpcli``
stays cheap: this module imports numpy.

Inputs are checked before any arithmetic: a batch of the wrong shape, of
booleans, strings or complex numbers, with NaN, or of floats on the 0-255
scale is a ``ValueError`` saying what was expected, never a NumPy
broadcasting message or a silently wrong answer.
"""

import os

import numpy as np

from .checkpoint import load_model as _load_checkpoint
from .rundir import locate_model

SIDE = 28
PIXELS = SIDE * SIDE
_SHAPES = f"(n, {PIXELS}) or (n, {SIDE}, {SIDE})"


def network_string(spec):
    """'784-256-128-10 relu, softmax + cross_entropy': what ``bp train`` announces."""
    from .config import describe_network

    return describe_network(spec.sizes, spec.activation, spec.output, spec.loss)


class Classifier:
    """A trained bp model: ``predict(X)`` -> digits, ``predict_proba(X)`` -> probabilities.

    ``X`` is a batch of MNIST-style images, ink light on a dark background:
    shape ``(n, 784)`` (row-major 28x28) or ``(n, 28, 28)``; integer pixel
    levels 0..255 (uint8 as MNIST stores them) or floats in [0, 1]. One image
    is a batch of one: ``x[None]``.

    Attributes: ``path`` (the checkpoint), ``network`` ('784-256-128-10 relu,
    softmax + cross_entropy'), ``classes_`` (0..9), ``meta`` (the checkpoint's
    metadata: config, epoch, metrics).
    """

    def __init__(self, model, path):
        self._model = model
        self.path = path
        self.meta = model.meta
        self.network = network_string(model.spec)
        self.classes_ = np.arange(model.spec.sizes[-1])

    def __repr__(self):
        return f"<bp Classifier {self.network} from {self.path}>"

    def predict_proba(self, X):
        """Probabilities (n, 10) float32, each row summing to 1; what ``bp predict`` reports
        (a sigmoid-output model's independent scores normalised to sum to 1)."""
        P = self._model.predict_proba(as_pixels(X))
        if not np.isfinite(P).all():  # finite weights whose outputs overflow
            raise FloatingPointError(f"the model's output is not a number for some images: {self.path} "
                                     "holds a diverged model; train it again with a lower learning rate")
        return P

    def predict(self, X):
        """The most likely digit of each image: (n,) int64."""
        return self.predict_proba(X).argmax(axis=1)


def load_model(path=None):
    """The model in ``path``: a run dir (its best.npz) or a checkpoint file; None means
    runs/latest, as everywhere in bp; a str, bytes or os.PathLike path, as ``open``
    takes. Raises ``bpcli.errors.CheckpointError`` (a ``BpError``) for a missing,
    unreadable or bad checkpoint, TypeError for something that is not a path."""
    if path is not None:
        try:
            path = os.fsdecode(path)
        except TypeError:
            raise TypeError(f"load_model expects a path to a run dir or a checkpoint (str, bytes or "
                            f"os.PathLike) or None, got {type(path).__name__}") from None
    ckpt, _ = locate_model(path)
    return Classifier(_load_checkpoint(ckpt), ckpt)


def prepare_image(image):
    """The 28x28 input the model sees for a picture of a digit: (28, 28) uint8, 0 =
    background, 255 = ink, exactly what ``bp predict`` feeds an MNIST model (a
    Fashion-MNIST model's pictures are prepared as garments: ``image.load_for``).

    ``image``: a file path (any picture Pillow reads), a Pillow image, or a 2-D
    grey-level array (uint8, or floats in [0, 1]), dark ink on light paper or
    light on dark. Raises ``bpcli.errors.ImageError`` (a ``BpError``) for a
    file that cannot be read or a picture with no digit.
    """
    from . import image as image_mod

    if isinstance(image, (str, bytes, os.PathLike)):
        x = image_mod.load_digit(image)
    elif isinstance(image, np.ndarray):
        grey = _checked_values(image, "image")
        if grey.ndim != 2:
            raise ValueError(f"prepare_image expects a 2-D grey-level array, got shape {image.shape}")
        x = image_mod.prepare(grey)
    else:
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise TypeError(f"prepare_image expects a file path, a Pillow image or a 2-D array, "
                            f"got {type(image).__name__}")
        x = image_mod.load_digit_image(image)
    return x.reshape(SIDE, SIDE)


def as_pixels(X):
    """A batch ``X`` as the network's input (n, 784): integer levels as uint8, floats as
    float32 in [0, 1]. Anything else is a ValueError saying what was expected."""
    if isinstance(X, (str, bytes)):
        raise ValueError("X is a string, not an array of pixels; for a picture file use "
                         "bpcli.prepare_image(path)")
    try:
        A = np.asarray(X)
    except (ValueError, TypeError):
        raise ValueError(f"X is not a rectangular array of numbers (rows of different lengths?); "
                         f"pass an array of shape {_SHAPES}") from None
    if A.shape in ((PIXELS,), (SIDE, SIDE)):
        raise ValueError(f"X is one image of shape {A.shape}; predict takes a batch of shape {_SHAPES}: "
                         "pass x[None] for one image, or np.stack([...]) for several")
    if A.ndim == 3 and A.shape[1:] == (SIDE, SIDE):
        A = A.reshape(len(A), PIXELS)
    elif not (A.ndim == 2 and A.shape[1] == PIXELS):
        raise ValueError(f"X has shape {A.shape}, expected {_SHAPES}: MNIST-style 28x28 images; "
                         "for a picture file use bpcli.prepare_image(path)")
    return _checked_values(A, "X")


def _checked_values(A, what):
    """``A`` with its dtype and values checked: integer levels 0..255 -> uint8, floats in
    [0, 1] -> float32."""
    kind = A.dtype.kind
    if kind == "b":
        raise ValueError(f"{what} holds booleans; pass pixel levels: {what}.astype(np.uint8) * 255 "
                         "(True as ink), or floats in [0, 1]")
    if kind not in "uif":
        raise ValueError(f"{what} holds {A.dtype} values; pixels are numbers: integer levels "
                         "0..255 (uint8) or floats in [0, 1]")
    if A.size == 0:
        return A.astype(np.uint8 if kind in "ui" else np.float32)
    lo, hi = A.min(), A.max()
    if kind in "ui":
        if lo < 0 or hi > 255:
            raise ValueError(f"{what} holds integers from {lo} to {hi}; integer pixels are levels "
                             "0..255 (uint8, as MNIST stores them)")
        return A.astype(np.uint8, copy=False)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = "NaN" if np.isnan(A).any() else "infinite values"
        raise ValueError(f"{what} holds {bad}; pixels are floats in [0, 1] or integer levels 0..255")
    if lo < 0 or hi > 1:
        hint = (f"; it looks like levels 0..255: pass {what} / 255, or {what}.astype(np.uint8)"
                if lo >= 0 and hi <= 255 else "")
        raise ValueError(f"{what} holds floats from {lo:g} to {hi:g}, outside [0, 1]{hint}")
    return A.astype(np.float32, copy=False)
