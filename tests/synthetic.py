"""Small learnable stand-ins for MNIST, for tests that must not need the real files.

Each class is a fixed random prototype image; examples are the prototype plus
noise, as uint8 pixels, so a small MLP separates them in a few steps.
"""

from types import SimpleNamespace

import numpy as np


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
