"""Small learnable stand-ins for MNIST, for tests that must not need the real files.

Each class is a fixed random prototype image; examples are the prototype plus
noise, as uint8 pixels, so a small MLP separates them in a few steps.
"""

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


def tiny_mnist(n_train=600, n_test=200, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 784)) < 0.2

    def make(n):
        y = rng.integers(0, 10, n).astype(np.uint8)
        X = prototypes[y] * 200.0 + rng.random((n, 784)) * 55.0
        return X.astype(np.uint8), y

    train_images, train_labels = make(n_train)
    test_images, test_labels = make(n_test)
    return SimpleNamespace(train_images=train_images, train_labels=train_labels,
                           test_images=test_images, test_labels=test_labels)


def real_mnist_folder():
    """The folder of genuine gzipped MNIST files ($BP_TEST_MNIST, else ../shared/mnist), or None."""
    for candidate in (os.environ.get("BP_TEST_MNIST"), Path(__file__).resolve().parents[2] / "shared" / "mnist"):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


NO_MNIST = ("real MNIST not found: set BP_TEST_MNIST to a folder with the four .gz files "
            "(default ../shared/mnist relative to the repo)")
NEEDS_MNIST = pytest.mark.skipif(real_mnist_folder() is None, reason=NO_MNIST)


def write_model(path, activation="relu", output="softmax", loss="cross_entropy", hidden=(16, 8), seed=0,
                epoch=3):
    """A checkpoint as bp train writes it, with random weights (biases too, so every term counts)."""
    from bpcli.checkpoint import save_checkpoint
    from bpcli.config import resolve
    from bpcli.network import init_params
    from bpcli.train import spec_of

    cfg = resolve(None, [f"model.hidden={list(hidden)}", f"model.activation={activation}",
                            f"model.output={output}", f"model.loss={loss}"])
    values, spec = cfg.values, spec_of(cfg.recipe.model)
    rng = np.random.default_rng(seed)
    Ws, bs = init_params(spec, rng)
    bs = [(rng.standard_normal(b.shape) * 0.5).astype(np.float32) for b in bs]
    save_checkpoint(path, Ws, bs, {"config": values, "sizes": spec.sizes, "epoch": epoch})
    return path
