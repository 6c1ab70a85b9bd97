"""The IDX reader, load_mnist and the validation split (offline: tiny files from a local mirror)."""

import gzip
import hashlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpcli.data import MNIST, load_mnist, read_idx, split_validation
from bpcli.download import FileSpec
from bpcli.errors import ConfigError, DataError
from conftest import idx_bytes


@pytest.fixture(autouse=True)
def _hermetic(no_internet, clean_bp_env):
    """Every test here: loopback only, no BP_* settings from outside."""


def write(tmp_path, raw, name="f-idx"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


@pytest.fixture
def local_mirror(tmp_path, tiny_mnist):
    """A local-directory mirror holding the tiny files gzipped."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name, raw in tiny_mnist[0].items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
    return folder


# --- read_idx -------------------------------------------------------------------

def test_reads_images_as_rows_of_784(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28).astype(np.uint8)
    X = read_idx(write(tmp_path, idx_bytes(images)))
    assert X.shape == (3, 784) and X.dtype == np.uint8
    assert np.array_equal(X[1], images[1].ravel())      # row-major: pixel (r, c) at r * 28 + c
    X[0, 0] = 7                                          # a normal, writable array
    assert X[0, 0] == 7


def test_reads_labels(tmp_path):
    y = read_idx(write(tmp_path, idx_bytes(np.array([5, 0, 4, 1, 9]))))
    assert y.dtype == np.uint8 and y.tolist() == [5, 0, 4, 1, 9]


def test_empty_files_are_fine(tmp_path):
    assert read_idx(write(tmp_path, struct.pack(">II", 2049, 0))).shape == (0,)
    assert read_idx(write(tmp_path, struct.pack(">4I", 2051, 0, 28, 28))).shape == (0, 784)


@pytest.mark.parametrize("cut", [0, 3, 6, 10, 16, 100, -1])
def test_truncated_images_file(tmp_path, cut):
    raw = idx_bytes(np.zeros((2, 28, 28), np.uint8))
    path = write(tmp_path, raw[:cut])
    with pytest.raises(DataError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_wrong_magic(tmp_path):
    raw = struct.pack(">II", 2050, 1) + b"\x01"
    with pytest.raises(DataError, match="not an MNIST IDX file"):
        read_idx(write(tmp_path, raw))


def test_gzipped_file_is_not_idx(tmp_path):
    with pytest.raises(DataError, match="not an MNIST IDX file"):
        read_idx(write(tmp_path, gzip.compress(idx_bytes(np.zeros(3, np.uint8)))))


def test_count_disagrees_with_size(tmp_path):
    raw = struct.pack(">II", 2049, 5) + bytes(6)      # one byte too many
    with pytest.raises(DataError, match="header promises 5 labels"):
        read_idx(write(tmp_path, raw))


def test_images_must_be_28_by_28(tmp_path):
    raw = struct.pack(">4I", 2051, 1, 32, 32) + bytes(32 * 32)
    with pytest.raises(DataError, match="32 x 32"):
        read_idx(write(tmp_path, raw))


def test_labels_outside_0_to_9(tmp_path):
    with pytest.raises(DataError, match="label 10 at index 2"):
        read_idx(write(tmp_path, idx_bytes(np.array([1, 2, 10, 3]))))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read .*nope"):
        read_idx(tmp_path / "nope")


_HEADERS = st.sampled_from([b"", struct.pack(">I", 2049), struct.pack(">I", 2051),
                            struct.pack(">II", 2049, 3), struct.pack(">4I", 2051, 1, 28, 28)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=_HEADERS, body=st.binary(max_size=900))
def test_random_bytes_raise_only_data_error(tmp_path, head, body):
    path = write(tmp_path, head + body)
    try:
        array = read_idx(path)
    except DataError as err:
        assert "\n" not in str(err)
        return
    assert array.dtype == np.uint8 and array.ndim in (1, 2)


# --- load_mnist ------------------------------------------------------------------

def test_load_mnist_from_a_local_mirror(tmp_path, tiny_mnist, local_mirror):
    contents, specs = tiny_mnist
    mnist = load_mnist(tmp_path / "data", mirrors=[str(local_mirror)], files=specs, progress=False)
    assert isinstance(mnist, MNIST)
    assert mnist.train_images.shape == (6, 784) and mnist.train_labels.shape == (6,)
    assert mnist.test_images.shape == (4, 784) and mnist.test_labels.shape == (4,)
    assert all(a.dtype == np.uint8 for a in mnist)
    assert mnist.train_labels.tobytes() == contents["train-labels-idx1-ubyte"][8:]


def test_load_mnist_limit_cuts_only_the_training_set(tmp_path, tiny_mnist, local_mirror):
    full = load_mnist(tmp_path, mirrors=[str(local_mirror)], files=tiny_mnist[1], progress=False)
    cut = load_mnist(tmp_path, offline=True, files=tiny_mnist[1], limit=4)
    assert cut.train_images.shape == (4, 784) and np.array_equal(cut.train_labels, full.train_labels[:4])
    assert cut.test_images.shape == full.test_images.shape


@pytest.mark.parametrize("limit", [0, -3, 2.5, True, "10"])
def test_load_mnist_rejects_a_bad_limit(tmp_path, limit):
    with pytest.raises(ConfigError, match="data.limit"):
        load_mnist(tmp_path, offline=True, limit=limit)


def test_load_mnist_offline_says_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="offline.*missing train-images-idx3-ubyte"):
        load_mnist(tmp_path, offline=True)


def test_load_mnist_honours_bp_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("BP_OFFLINE", "1")
    with pytest.raises(DataError, match="offline"):
        load_mnist(tmp_path)


def test_images_and_labels_of_different_counts(tmp_path, tiny_mnist):
    # The hash table vouches for each file, but the pair still has to agree.
    contents, specs = dict(tiny_mnist[0]), dict(tiny_mnist[1])
    short = idx_bytes(np.array([1, 2, 3, 4, 5]))
    contents["train-labels-idx1-ubyte"] = short
    specs["train-labels-idx1-ubyte"] = FileSpec(hashlib.sha256(short).hexdigest(), "labels", 5)
    for name, raw in contents.items():
        (tmp_path / name).write_bytes(raw)
    with pytest.raises(DataError, match="has 6 images but .* has 5 labels"):
        load_mnist(tmp_path, offline=True, files=specs)


# --- split_validation ------------------------------------------------------------

def _examples(n=50):
    X = np.arange(n * 784, dtype=np.uint32).reshape(n, 784).astype(np.uint8)
    X[:, 0] = np.arange(n)                 # an id per row, to follow rows through the split
    return X, (np.arange(n) % 10).astype(np.uint8)


def test_split_is_a_partition_and_keeps_pairs():
    X, y = _examples()
    tX, ty, vX, vy = split_validation(X, y, 12, np.random.default_rng(0))
    assert tX.shape == (38, 784) and vX.shape == (12, 784) and ty.shape == (38,) and vy.shape == (12,)
    ids = np.concatenate([tX[:, 0], vX[:, 0]])
    assert sorted(ids.tolist()) == list(range(50))
    assert np.array_equal(np.concatenate([ty, vy]), ids % 10)


def test_split_is_fixed_by_the_seed():
    X, y = _examples()
    a = split_validation(X, y, 10, np.random.default_rng(7))
    b = split_validation(X, y, 10, np.random.default_rng(7))
    c = split_validation(X, y, 10, np.random.default_rng(8))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[2], c[2])


def test_no_validation_returns_everything_and_empty_arrays():
    X, y = _examples()
    rng = np.random.default_rng(3)
    tX, ty, vX, vy = split_validation(X, y, 0, rng)
    assert tX is X and ty is y
    assert vX.shape == (0, 784) and vy.shape == (0,) and vX.dtype == np.uint8
    # The rng moves on the same whatever n_val is, so later draws do not depend on it.
    other = np.random.default_rng(3)
    split_validation(X, y, 5, other)
    assert rng.integers(1 << 30) == other.integers(1 << 30)


@pytest.mark.parametrize("n_val", [-1, 50, 51, 2.0])
def test_bad_validation_size(n_val):
    X, y = _examples()
    with pytest.raises(ConfigError, match="data.validation"):
        split_validation(X, y, n_val, np.random.default_rng(0))
