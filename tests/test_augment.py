"""Augmentation: transforms move pixels where the geometry says, keep the range, and are seeded."""

import numpy as np
import pytest

from bpcli.augment import Augmenter, affine_sources, elastic_displacements, gaussian_matrix


def dot(x, y, n=1):
    X = np.zeros((n, 28, 28), np.uint8)
    X[:, y, x] = 255
    return X.reshape(n, 784)


def augment(X8, rng, spec):
    return Augmenter(spec, len(X8))(X8, rng).copy()


def bilinear(X8, qx, qy):
    return Augmenter({}, len(X8)).bilinear(X8, qx.copy(), qy.copy()).copy()


def where(img):
    y, x = np.unravel_index(int(np.argmax(img)), (28, 28))
    return int(x), int(y)


def test_identity_is_exact():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (3, 784), dtype=np.uint8)
    np.testing.assert_allclose(augment(X, rng, {}), X / 255, rtol=1e-6)


def test_shift_moves_a_dot_by_the_shift():
    # a fixed shift: rng.uniform(-s, s) with s tiny is ~0, so shift via sources directly
    qx, qy = affine_sources(np.random.default_rng(0), 1)
    out = bilinear(dot(10, 12), qx - 3, qy + 2)  # read 3 px to the left, 2 px below
    assert where(out[0]) == (13, 10) and out.max() == pytest.approx(1.0)


def test_rotation_by_90_degrees_turns_right_into_down():
    class Quarter:  # an rng whose uniform() always returns +half: rotate exactly by 'rotate'
        def uniform(self, low, high, size):
            return np.full(size, high)

    qx, qy = affine_sources(Quarter(), 1, rotate=90.0)
    out = bilinear(dot(19, 13), qx, qy)  # 5.5 px right of the centre (13.5, 13.5), 0.5 above
    # rotated by +90 degrees in image coordinates (y down): right -> down
    assert where(out[0]) == (14, 19)


def test_scale_up_moves_a_dot_away_from_the_centre():
    class Double:
        def uniform(self, low, high, size):
            return np.full(size, high)

    qx, qy = affine_sources(Double(), 1, scale=1.0)  # s = 2
    out = bilinear(dot(17, 13) + dot(18, 13) + dot(17, 14) + dot(18, 14), qx, qy)
    x, y = where(out[0])
    assert x >= 20  # 4 px right of centre becomes ~8 px right


def test_outside_reads_zero_and_range_is_kept():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (50, 784), dtype=np.uint8)
    out = augment(X, rng, {"shift": 3, "rotate": 15, "scale": 0.15, "shear": 0.2, "elastic": 34})
    assert out.shape == X.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    qx, qy = affine_sources(rng, 1)
    assert bilinear(np.full((1, 784), 255, np.uint8), qx + 100, qy)[0].max() == 0.0


def test_augmentation_is_reproducible_from_the_seed():
    X = np.random.default_rng(2).integers(0, 256, (8, 784), dtype=np.uint8)
    spec = {"shift": 2, "rotate": 10, "elastic": 20}
    a = augment(X, np.random.default_rng(7), spec)
    b = augment(X, np.random.default_rng(7), spec)
    c = augment(X, np.random.default_rng(8), spec)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_each_image_gets_its_own_transform():
    X = np.repeat(dot(14, 14), 4, axis=0)
    out = augment(X, np.random.default_rng(3), {"shift": 3})
    assert len({where(img) for img in out}) > 1


def test_elastic_field_is_smooth_and_scaled():
    dx, dy = elastic_displacements(np.random.default_rng(4), 200, alpha=10.0, sigma=4.0)
    field = dx.reshape(200, 28, 28)
    neighbour = np.abs(np.diff(field, axis=2)).mean()
    assert neighbour < 0.2 * np.abs(field).mean()  # neighbours move together
    assert 0.1 < np.abs(field).mean() < 10.0


def test_gaussian_matrix_rows_sum_to_one():
    G = gaussian_matrix(4.0)
    np.testing.assert_allclose(G.sum(axis=1), 1.0, rtol=1e-6)
    assert G[14, 14] == G[14].max()


def test_augmenting_mnist_keeps_digits_recognisable_by_mass():
    # the total ink changes only a little under mild transforms
    rng = np.random.default_rng(5)
    X = np.zeros((10, 28, 28), np.uint8)
    X[:, 8:20, 12:16] = 255  # a bar, like a "1"
    X = X.reshape(10, 784)
    out = augment(X, rng, {"shift": 2, "rotate": 10, "scale": 0.1})
    np.testing.assert_allclose(out.sum(axis=1), X.sum(axis=1) / 255, rtol=0.25)


def test_a_partial_batch_uses_only_its_rows():
    aug = Augmenter({"shift": 2}, 8)
    X = np.random.default_rng(6).integers(0, 256, (8, 784), dtype=np.uint8)
    aug(X, np.random.default_rng(1))
    out = aug(X[:3], np.random.default_rng(1)).copy()
    np.testing.assert_array_equal(out, augment(X[:3], np.random.default_rng(1), {"shift": 2}))


def test_images_far_into_a_long_batch_are_read_exactly():
    """Flat indices are computed in float32, exact only to 2**24 (~17,458 padded images):
    the last rows of a batch of 20,000 read their own pixels, not a neighbour's."""
    from bpcli.augment import GRID

    aug = Augmenter({}, 20_000)
    X = np.random.default_rng(7).integers(0, 256, (4, 784), dtype=np.uint8)
    qx, qy = np.tile(GRID[0] + 13.5, (4, 1)), np.tile(GRID[1] + 13.5, (4, 1))  # every pixel at itself
    out = aug.bilinear(X, qx, qy, first=20_000 - 4)
    np.testing.assert_array_equal(out, X.astype(np.float32) * np.float32(1 / 255))


def test_a_batch_longer_than_a_chunk_is_read_in_chunks_with_the_same_bits(monkeypatch):
    import bpcli.augment as augment_module

    X = np.random.default_rng(8).integers(0, 256, (10, 784), dtype=np.uint8)
    whole = augment(X, np.random.default_rng(2), {"shift": 2, "rotate": 10, "elastic": 10})
    monkeypatch.setattr(augment_module, "CHUNK", 3)
    chunked = augment(X, np.random.default_rng(2), {"shift": 2, "rotate": 10, "elastic": 10})
    assert chunked.tobytes() == whole.tobytes()
