"""``bp predict``: classify people's own digit images with a trained model.

The picture is prepared the way the model's dataset was made (``image.load_for``:
ink like MNIST, a product photo like Fashion-MNIST), and the answer is named as
that dataset names it: "label" beside the number in "digit" ("Sneaker", 7).
"""

import os

import numpy as np

from .datasets import of_config
from .errors import ConfigError, ImageError
from .fsutil import shown_path
from .image import STDIN, images_in, load_for

UNCERTAIN_BELOW = 0.5


def expand(paths):
    """The images to classify: a folder means its pictures (sorted by name); ``-`` is the
    picture on standard input; anything else is a file. -> list of (path, error or None)."""
    if list(paths).count(STDIN) > 1:
        raise ConfigError("- (standard input) can be given once: it holds one picture")
    out = []
    for path in paths:
        if path != STDIN and os.path.isdir(path):
            try:
                found = images_in(path)
            except OSError as err:
                out.append((path, f"cannot list folder {shown_path(path)}: {err.strerror}"))
                continue
            if not found:
                out.append((path, f"folder {shown_path(path)} holds no pictures (png, jpg, bmp, gif, tiff, webp)"))
            out.extend((p, None) for p in found)
        else:
            out.append((path, None))
    return out


def predict_images(model, paths):
    """(results, inputs): one result per image as docs/manual.md says, in order, and the 784-pixel
    input the model saw (None for an image that could not be read, whose result
    carries ``digit: None`` and an error). Folders and ``-`` as in ``expand``."""
    dataset = of_config(model.meta.get("config", {}))
    results, inputs = [], []
    for path, problem in expand(paths):
        try:
            if problem:
                raise ImageError(problem)
            inputs.append(load_for(path, dataset))
            results.append({"image": path})
        except ImageError as err:
            inputs.append(None)
            results.append({"image": path, "digit": None, "error": str(err)})
    good = [i for i, x in enumerate(inputs) if x is not None]
    if good:
        P = model.predict_proba(np.stack([inputs[i] for i in good]))
        for i, p in zip(good, P):
            if not np.isfinite(p).all():  # finite weights whose outputs overflow: no answer
                results[i].update(digit=None, error=f"the model's output for {results[i]['image']} is not a "
                                  "number: the model has diverged; train it again with a lower --lr")
                continue
            digit = int(p.argmax())
            results[i].update(digit=digit, label=dataset.classes[digit], confidence=float(p[digit]),
                              probabilities=[round(float(v), 6) for v in p],
                              uncertain=bool(p[digit] < UNCERTAIN_BELOW))
    return results, inputs
