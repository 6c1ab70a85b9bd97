"""``bp predict``: classify people's own digit images with a trained model.

The picture is prepared the way the model's dataset was made (``image.load_for``:
ink like MNIST, a product photo like Fashion-MNIST), and the answer is named as
that dataset names it: "label" beside the number in "digit" ("Sneaker", 7).
"""

import numpy as np

from .datasets import of_config
from .errors import ImageError
from .image import load_for

UNCERTAIN_BELOW = 0.5


def predict_images(model, paths):
    """(results, inputs): one PRODUCT.md result per image, in order, and the 784-pixel
    input the model saw (None for an image that could not be read, whose result
    carries ``digit: None`` and an error)."""
    dataset = of_config(model.meta.get("config", {}))
    results, inputs = [], []
    for path in paths:
        try:
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
