"""The datasets bp knows: MNIST and two drop-ins in the same IDX format.

One table, looked up by the same string the YAML key ``data.dataset`` uses.
Each entry says where its files are cached, where they come from, how each
file is pinned, and what its ten classes are called, so that reports can say
"Sneaker" rather than "7". No I/O and no numpy here: ``bp --help`` and the
config rules import this module.

Where each dataset is cached (``cache_dir``): MNIST at the top of the data
dir, where every existing cache and CI cache key already has it; the others in
a subfolder named after them (``data/fashion-mnist/``), so their files, which
carry MNIST's very names, can never be taken for MNIST or overwrite it.
"""

import os
from typing import NamedTuple, Optional


class FileSpec(NamedTuple):
    """What one IDX file must be.

    sha256: of the decompressed IDX bytes, or None where nobody can compute it
        here (then gz_md5 pins the file; ``bpcli/download.py`` says how).
    kind: "images" or "labels"; count: how many.
    gz_md5: the MD5 of the publisher's .gz file, used only when sha256 is None.
    """

    sha256: Optional[str]
    kind: str
    count: int
    gz_md5: Optional[str] = None


class Dataset(NamedTuple):
    name: str               # the data.dataset value
    title: str              # how messages name it
    subdir: str             # its cache folder inside the data dir ("" = the data dir itself)
    files: dict             # {IDX file name: FileSpec}
    mirrors: tuple          # built-in base URLs, tried in order
    mirror_env: str         # the environment variable that replaces them (comma-separated)
    classes: tuple          # the name of each label 0-9
    noun: str               # what one example is: "digit", "garment", "character"


TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
TEST_FILES = (TEST_IMAGES, TEST_LABELS)

DATASETS = {
    "mnist": Dataset(
        "mnist", "MNIST", "",
        # docs/manual.md, data integrity: the SHA-256 of the decompressed IDX content,
        # because the gzip wrappers differ between mirrors.
        {
            TRAIN_IMAGES: FileSpec("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", "images", 60000),
            TRAIN_LABELS: FileSpec("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", "labels", 60000),
            TEST_IMAGES: FileSpec("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", "images", 10000),
            TEST_LABELS: FileSpec("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", "labels", 10000),
        },
        # yann.lecun.com answers 403 to most clients, so it is left out.
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        "BP_MNIST_MIRROR",
        tuple(str(d) for d in range(10)),
        "digit",
    ),
    "fashion-mnist": Dataset(
        "fashion-mnist", "Fashion-MNIST", "fashion-mnist",
        # The label files: SHA-256 of their IDX content, computed from the authors'
        # own .gz files (whose MD5s match the authors' README). The image files
        # were not at hand: the MD5 of the authors' .gz, from their README.
        {
            TRAIN_IMAGES: FileSpec(None, "images", 60000, gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            TRAIN_LABELS: FileSpec("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", "labels", 60000),
            TEST_IMAGES: FileSpec(None, "images", 10000, gz_md5="bef4ecab320f06d8554ea6380940ec79"),
            TEST_LABELS: FileSpec("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", "labels", 10000),
        },
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",     # the authors' own
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        "BP_FASHION_MNIST_MIRROR",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        "garment",
    ),
    "kmnist": Dataset(
        "kmnist", "Kuzushiji-MNIST", "kmnist",
        # CODH publishes no checksums. These are the MD5s of its .gz files as
        # torchvision pins them (datasets/mnist.py, KMNIST); not checked on this
        # machine. A file that does not match is refused, never trusted.
        {
            TRAIN_IMAGES: FileSpec(None, "images", 60000, gz_md5="bdb82020997e1d708af4cf47b453dcf7"),
            TRAIN_LABELS: FileSpec(None, "labels", 60000, gz_md5="e144d726b3acfaa3e44228e80efcd344"),
            TEST_IMAGES: FileSpec(None, "images", 10000, gz_md5="5c965bf0a639b31b8f53240b1b52f4d7"),
            TEST_LABELS: FileSpec(None, "labels", 10000, gz_md5="7320c461ea6c1c855c0b718fb2a4b134"),
        },
        ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
         "https://storage.googleapis.com/kuzushiji-mnist/"),              # the link in CODH's README
        "BP_KMNIST_MIRROR",
        # one hiragana from each row of the syllabary, romanized (plots and
        # terminals may lack a Japanese font): お き す つ な は ま や れ を
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        "character",
    ),
}

NAMES = tuple(DATASETS)
DEFAULT = "mnist"


def get(name):
    """The Dataset called ``name`` (a data.dataset value); None, or a missing key in an old checkpoint, is MNIST."""
    return DATASETS[name or DEFAULT]


def of_config(values):
    """The Dataset a resolved config (a run's, a checkpoint's) trained on; MNIST for configs older than the key."""
    data = values.get("data") if isinstance(values, dict) else None
    name = data.get("dataset") if isinstance(data, dict) else None
    return DATASETS.get(name, DATASETS[DEFAULT]) if isinstance(name, str) else DATASETS[DEFAULT]


def cache_dir(data_dir, dataset):
    """Where ``dataset``'s files are cached under the data dir ``data_dir``."""
    data_dir = os.fspath(data_dir)
    return os.path.join(data_dir, dataset.subdir) if dataset.subdir else data_dir
