"""``bp predict``: classify people's own digit images with a trained model."""

import numpy as np

from .errors import ImageError
from .image import load_digit

UNCERTAIN_BELOW = 0.5


def predict_images(model, paths):
    """(results, inputs): one PRODUCT.md result per image, in order, and the 784-pixel
    input the model saw (None for an image that could not be read, whose result
    carries ``digit: None`` and an error)."""
    results, inputs = [], []
    for path in paths:
        try:
            inputs.append(load_digit(path))
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
            results[i].update(digit=digit, confidence=float(p[digit]),
                              probabilities=[round(float(v), 6) for v in p],
                              uncertain=bool(p[digit] < UNCERTAIN_BELOW))
    return results, inputs
