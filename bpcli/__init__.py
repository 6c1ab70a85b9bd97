"""bp: backpropagation for real — a command-line MNIST trainer with a plain NumPy MLP.

From Python::

    import bpcli
    model = bpcli.load_model("runs/latest")     # a run dir or a checkpoint
    model.predict(images)                       # (n, 784) or (n, 28, 28): uint8 0..255 or floats in [0, 1]
    model.predict(bpcli.prepare_image("digit.png")[None])

Importing the package must stay cheap (``bp --help`` imports it): no numpy,
requests or Pillow at module level here or in ``bpcli.cli``. The API's
functions below import ``bpcli.api`` (and numpy) when first called.
"""

__version__ = "0.1.0"

__all__ = ["load_model", "prepare_image", "__version__"]


def load_model(path=None):
    """A trained model with ``predict(X)`` and ``predict_proba(X)``: see ``bpcli.api.Classifier``.

    ``path``: a run dir (its best.npz) or a checkpoint file; None means runs/latest."""
    from .api import load_model

    return load_model(path)


def prepare_image(image):
    """The (28, 28) uint8 input the model sees for a picture of a digit (a file path, a
    Pillow image or a 2-D grey array), prepared exactly as ``bp predict`` does:
    see ``bpcli.api.prepare_image``."""
    from .api import prepare_image

    return prepare_image(image)
