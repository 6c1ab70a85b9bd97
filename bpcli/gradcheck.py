"""``bp gradcheck``: backprop against central finite differences on a small copy of the config's net.

The full 784-input network has too many weights to difference one by one, so
the check keeps the config's activation, output, loss and depth, but shrinks
the layers (at most 6 inputs and 5 units per hidden layer), in float64.
"""

import numpy as np

from .network import Spec, gradient_check, init_params, one_hot


def check_model(model, n=8, seed=0):
    """The check for a config's model section (``config.Model``)."""
    sizes = [6, *[min(h, 5) for h in model.hidden], 4]
    spec = Spec(sizes, model.activation, model.output, model.loss)
    rng = np.random.default_rng(seed)
    Ws, bs = init_params(spec, rng, model.init, dtype=np.float64)
    # non-zero biases, so every path of the derivative is exercised
    bs = [b + 0.1 * rng.standard_normal(b.shape) for b in bs]
    X = rng.random((n, sizes[0]))
    Y = one_hot(rng.integers(0, sizes[-1], n), sizes[-1], np.float64)
    errors = gradient_check(Ws, bs, X, Y, spec)
    layers = [{"layer": l + 1, "W": w, "b": b} for l, (w, b) in enumerate(errors)]
    return {"sizes": sizes, "activation": spec.activation, "output": spec.output, "loss": spec.loss,
            "n": n, "layers": layers, "max_error": max(max(w, b) for w, b in errors)}
