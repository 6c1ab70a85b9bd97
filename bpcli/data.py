"""MNIST (or a drop-in: ``bpcli/datasets.py``) as arrays: read the cached IDX files,
check them, split off a validation set.

This is the data API for the rest of bp. ``load_mnist`` first asks
``download.ensure_mnist`` for verified files (fetching what is missing),
then reads them.

Which data dir: ``datadir.choose``, one rule for every command. A run records
the absolute dir it used, so that its model can later be scored from any
folder; that recorded dir is only ever read, and only when it already holds
the verified files (``load_mnist_for``). Images stay uint8, ``(n, 784)``, row-major 28 x 28 pixels,
0 = background: 47 MB for the training set, against 188 MB as float32, so
scaling to [0, 1] is left to whoever makes the batches.

The files are in IDX format, which ``bpcli.idx`` describes.
"""

import os
from typing import NamedTuple

import numpy as np

from . import datadir, datasets, download, idx
from .datasets import TEST_FILES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS  # noqa: F401
from .errors import ConfigError, DataError

PIXELS = idx.ROWS * idx.COLS
N_CLASSES = 10


class MNIST(NamedTuple):
    """The four arrays, uint8: images ``(n, 784)``, labels ``(n,)`` with values 0-9."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


_REDOWNLOAD = "run `bp download --force`"


def read_idx(path):
    """Parse and check one MNIST IDX file: images as ``(n, 784)`` uint8, labels as ``(n,)`` uint8.

    Raises DataError naming the file when it cannot be read, is truncated,
    has a magic number other than 2051 (images, n x 28 x 28) or 2049
    (labels), has a length that disagrees with its header, or holds a label
    outside 0-9.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(4)
            if len(head) < 4:
                raise DataError(f"{path} is truncated ({size} bytes, not even an IDX header); {_REDOWNLOAD}")
            kind = idx.kind_of(head)
            if kind is None:
                raise DataError(
                    f"{path} is not an MNIST IDX file (magic {int.from_bytes(head, 'big'):#010x}, expected "
                    f"0x00000803 for images or 0x00000801 for labels); {_REDOWNLOAD}"
                )
            ndim = idx.NDIM[kind]
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path} is truncated inside its IDX header ({size} bytes); {_REDOWNLOAD}")
            dims = idx.dims(kind, raw_dims)
            if kind == "images" and dims[1:] != (idx.ROWS, idx.COLS):
                raise DataError(f"{path} holds {dims[1]} x {dims[2]} images, bp needs 28 x 28")
            n = dims[0]
            # Python ints: a corrupt header cannot overflow this or make a huge allocation.
            expected = idx.file_size(kind, n)
            if size != expected:
                raise DataError(
                    f"{path} is {size} bytes but its header promises {n} {kind} ({expected} bytes): "
                    f"truncated or corrupt; {_REDOWNLOAD}"
                )
            data = np.empty(expected - 4 - 4 * ndim, dtype=np.uint8)
            if f.readinto(data) != data.size:
                raise DataError(f"{path} changed while being read; try again")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}; run `bp download`") from None

    if kind == "labels":
        if n and data.max() >= N_CLASSES:
            bad = int(np.argmax(data >= N_CLASSES))
            raise DataError(f"{path} holds label {data[bad]} at index {bad}, outside 0-9; {_REDOWNLOAD}")
        return data
    return data.reshape(n, PIXELS)


def _read_pair(images_path, labels_path):
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 2:
        raise DataError(f"{images_path} holds labels, not images; {_REDOWNLOAD}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path} holds images, not labels; {_REDOWNLOAD}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; {_REDOWNLOAD}"
        )
    return images, labels


def load_mnist(data_dir, mirrors=None, offline=None, *, limit=None, progress=None, session=None, files=None,
               dataset="mnist"):
    """Fetch what is missing into ``data_dir``, verify, and return the four arrays as an ``MNIST``.

    dataset: which of ``datasets.DATASETS`` (config ``data.dataset``); its files
        are cached in its own folder of the data dir (``datasets.cache_dir``).
    limit: keep only the first ``limit`` training examples (config
        ``data.limit``; None keeps all 60000). Applied before any
        validation split; the test set is never cut.
    mirrors, offline, progress, session, files: passed to ``download.ensure_mnist``
        (None for mirrors / offline: ``$BP_MNIST_MIRROR`` / ``$BP_OFFLINE``, else the defaults).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"data.limit must be a positive whole number or null, got {limit!r}")
    paths = download.ensure_mnist(
        data_dir, mirrors=mirrors, offline=offline, progress=progress, session=session, files=files,
        dataset=dataset,
    )
    train_images, train_labels = _read_pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS])
    test_images, test_labels = _read_pair(paths[TEST_IMAGES], paths[TEST_LABELS])
    if limit is not None:
        train_images, train_labels = train_images[:limit], train_labels[:limit]
    return MNIST(train_images, train_labels, test_images, test_labels)


def verified_dir(folder, names=tuple(download.MNIST_FILES), dataset="mnist"):
    """``folder`` if the data dir ``folder`` already holds every file of ``dataset`` in ``names``,
    each verified; else None. Only reads: nothing is created, locked or fetched there."""
    if not isinstance(folder, str) or not folder:
        return None
    files = download.files_of(dataset)
    cache = datasets.cache_dir(folder, datasets.get(dataset))
    for name in names:
        if download.cache_problem(os.path.join(cache, name), files[name]) is not None:
            return None
    return folder


def settle_data_dir(cfg, flag=None):
    """Fix the data dir of a run about to train into ``cfg`` (``Config.data_dir``, with
    ``flag``, --data-dir), made absolute so the run's recorded config.yaml names the same
    folder from anywhere."""
    folder, source = cfg.data_dir(flag)
    cfg.set("data.dir", os.path.abspath(folder), source)


def choose_data_dir(recorded, flag=None, dataset="mnist", names=None):
    """Where a model's or a run's data is (``datadir.choose``): its ``recorded`` dir takes
    step 4 when it already holds every verified file in ``names`` (default: all of
    ``dataset``'s). -> (folder, source), source one of "flag --data-dir",
    "$BP_DATA_DIR", "recorded", "default"."""
    def recorded_if_verified():
        folder = verified_dir(recorded, names or tuple(datasets.get(dataset).files), dataset)
        return (folder, "recorded") if folder else None

    return datadir.choose(flag, beside=recorded_if_verified)


def load_mnist_for(values, data_dir=None, split=None, *, mirrors=None, offline=None):
    """The dataset a model was trained on (its run's config ``values``, from a checkpoint).

    The data goes where the user says: ``data_dir`` (--data-dir), else
    $BP_DATA_DIR, else ./data; only there is anything created or fetched.
    A checkpoint is untrusted, so the data.dir it records never decides
    where bp writes: with neither of the first two given it is read from
    when it already holds verified files, and otherwise ignored.
    split="test" needs only the two test files (the training arrays then
    come back empty). mirrors, offline: as for ``download.ensure_mnist``.
    """
    dataset = datasets.of_config(values).name
    names = TEST_FILES if split == "test" else tuple(datasets.get(dataset).files)
    recorded = (values.get("data") or {}).get("dir") if isinstance(values, dict) else None
    folder, source = choose_data_dir(recorded, data_dir, dataset, names)
    if source == "recorded":  # verified there already: read, nothing fetched
        cache = datasets.cache_dir(folder, datasets.get(dataset))
        paths = {name: os.path.join(cache, name) for name in names}
    else:
        files = download.files_of(dataset)
        paths = download.ensure_mnist(folder, mirrors=mirrors, offline=offline, dataset=dataset,
                                      files={n: files[n] for n in names})
    test_images, test_labels = _read_pair(paths[TEST_IMAGES], paths[TEST_LABELS])
    if split == "test":
        empty = np.zeros((0, PIXELS), np.uint8)
        return MNIST(empty, np.zeros(0, np.uint8), test_images, test_labels)
    return MNIST(*_read_pair(paths[TRAIN_IMAGES], paths[TRAIN_LABELS]), test_images, test_labels)


def split_validation(images, labels, n_val, rng):
    """Hold out ``n_val`` random examples: ``(train_X, train_y, val_X, val_y)``.

    images (n, 784), labels (n,); rng a ``numpy.random.Generator``. The
    held-out rows are the first ``n_val`` of one permutation drawn from
    ``rng``, so a seed fixes the split. The permutation is drawn even for
    ``n_val == 0`` (which returns the inputs and empty validation arrays),
    so what ``rng`` yields afterwards does not depend on ``n_val``.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)) or not 0 <= n_val < n:
        raise ConfigError(f"data.validation must be a whole number from 0 to {n - 1} (there are {n} examples), got {n_val!r}")
    perm = rng.permutation(n)
    if n_val == 0:
        return images, labels, images[:0], labels[:0]
    val, train = perm[:n_val], perm[n_val:]
    return images[train], labels[train], images[val], labels[val]


def seeds(seed):
    """Independent streams for init, validation split and training (shuffle, dropout)."""
    init, split, train = np.random.SeedSequence(seed).spawn(3)
    return np.random.default_rng(init), np.random.default_rng(split), np.random.default_rng(train)


def validation_split(data, recipe):
    """(train_X, train_y, val_X, val_y) of a run (its ``config.Recipe``): the first
    data.limit training images, data.validation of them held out by the seed's own stream."""
    limit = recipe.data.limit
    _, split_rng, _ = seeds(recipe.seed)
    return split_validation(data.train_images[:limit], data.train_labels[:limit], recipe.data.validation, split_rng)
