"""data.dataset end to end: the drop-ins (Fashion-MNIST, KMNIST) on generated IDX files served
on 127.0.0.1, class names in reports, rejected cache files, and the data dir rules every
fetching command follows (--data-dir > $BP_DATA_DIR > ./data, --mirror, --offline)."""

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import idx_bytes, make_tiny_mnist

from bpcli import datasets, download
from bpcli.cli import cli

FASHION = datasets.DATASETS["fashion-mnist"].classes


def _gz(raw):
    return gzip.compress(raw, mtime=0)  # fixed bytes: the MD5 pins a .gz file exactly


def tiny_dataset(seed=1, n_train=12, n_test=10, md5_labels=False):
    """``(gz files {url path: bytes}, {name: FileSpec})`` of a tiny IDX dataset pinned the way
    Fashion-MNIST is: images by the MD5 of their .gz, labels by their content SHA-256 (or,
    with md5_labels, by MD5 too, as KMNIST)."""
    rng = np.random.default_rng(seed)
    served, specs = {}, {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        for name, array, kind in ((f"{prefix}-images-idx3-ubyte", images, "images"),
                                  (f"{prefix}-labels-idx1-ubyte", labels, "labels")):
            raw = idx_bytes(array)
            gz = _gz(raw)
            served[f"/{name}.gz"] = gz
            if kind == "images" or md5_labels:
                specs[name] = datasets.FileSpec(None, kind, n, gz_md5=hashlib.md5(gz).hexdigest())
            else:
                specs[name] = datasets.FileSpec(hashlib.sha256(raw).hexdigest(), kind, n)
    return served, specs


@pytest.fixture
def fashion(monkeypatch, make_server, tmp_path, clean_bp_env, no_internet):
    """A tiny Fashion-MNIST stand-in served on 127.0.0.1 as its only built-in mirror."""
    served, specs = tiny_dataset()
    server = make_server()
    server.files.update(served)
    ds = datasets.DATASETS["fashion-mnist"]
    monkeypatch.setitem(datasets.DATASETS, "fashion-mnist", ds._replace(files=specs, mirrors=(server.url,)))
    monkeypatch.setenv("BP_DATA_DIR", str(tmp_path / "data"))
    return server


TRAIN = ["train", "--set", "data.dataset=fashion-mnist", "--set", "data.validation=2", "--epochs", "1",
         "--batch-size", "4", "--hidden", "8", "--quiet", "--json"]


def test_fashion_mnist_has_its_own_folder_and_reports_name_its_classes(fashion, tmp_path):
    result = CliRunner().invoke(cli, TRAIN)
    assert result.exit_code == 0, result.output
    run_dir = json.loads(result.stdout)["run_dir"]
    data = tmp_path / "data"
    assert sorted(p.name for p in (data / "fashion-mnist").iterdir() if not p.name.startswith(".")) == [
        "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.sha256", "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte", "train-images-idx3-ubyte.sha256", "train-labels-idx1-ubyte"]
    assert not (data / "train-images-idx3-ubyte").exists()  # MNIST's place is left alone

    result = CliRunner().invoke(cli, ["evaluate", run_dir, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dataset"] == "fashion-mnist" and doc["classes"] == list(FASHION)
    assert list(doc["per_digit"]) == [str(d) for d in range(10)]  # the manual's keys stay
    text = CliRunner().invoke(cli, ["evaluate", run_dir]).stdout
    assert "Sneaker" in text and "Ankle boot" in text and "class  support" in text.replace("  class", "class")

    from PIL import Image

    picture = np.full((60, 40), 255, np.uint8)
    picture[10:50, 8:32] = 40   # a dark item on white
    Image.fromarray(picture).save(tmp_path / "shirt.png")
    result = CliRunner().invoke(cli, ["predict", "--model", run_dir, "--json", str(tmp_path / "shirt.png")])
    assert result.exit_code == 0, result.output
    (answer,) = json.loads(result.stdout)
    assert answer["label"] == FASHION[answer["digit"]]
    text = CliRunner().invoke(cli, ["predict", "--model", run_dir, str(tmp_path / "shirt.png")]).stdout
    assert text.split(": ", 1)[1].startswith(answer["label"] + " (")

    result = CliRunner().invoke(cli, ["explain", "--model", run_dir, "--index", "7", "--batch", "4"])
    assert result.exit_code == 0, result.output
    assert "fashion-mnist test image 7, a 7 (Sneaker)" in result.stdout
    assert "all ten digits" not in result.stdout


def test_garments_are_prepared_like_fashion_mnist_not_like_digits():
    from bpcli.image import prepare_garment

    picture = np.full((100, 50), 1.0, np.float32)
    picture[20:80, 15:35] = 0.2   # a dark, upright item on white, 60 x 20
    x = prepare_garment(picture).reshape(28, 28)
    assert x.max() == 204 and x[:, 0].max() == 0    # negated: the item light, the background black
    rows = np.flatnonzero(x.max(axis=1))
    assert rows[0] == 0 and rows[-1] == 27       # the longer side fills all 28 px (a digit: 20)
    cols = np.flatnonzero(x.max(axis=0))
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1  # centred as a box


def test_plot_names_fashion_classes(fashion, tmp_path, monkeypatch):
    result = CliRunner().invoke(cli, TRAIN)
    assert result.exit_code == 0, result.output
    run_dir = json.loads(result.stdout)["run_dir"]
    from bpcli import plot

    seen = {}
    real = plot.plot_confusion

    def spy(confusion, path, title="", classes=None, noun="digit"):
        seen.update(classes=classes, noun=noun, title=title)
        return real(confusion, path, title, classes=classes, noun=noun)

    monkeypatch.setattr(plot, "plot_confusion", spy)
    result = CliRunner().invoke(cli, ["plot", run_dir, "--out", str(tmp_path / "pics")])
    assert result.exit_code == 0, result.output
    assert seen["classes"] == FASHION and seen["noun"] == "garment" and "Fashion-MNIST" in seen["title"]


def test_a_gz_that_is_not_the_publishers_is_refused(fashion, tmp_path):
    raw = gzip.decompress(fashion.files["/t10k-images-idx3-ubyte.gz"])
    fashion.files["/t10k-images-idx3-ubyte.gz"] = gzip.compress(raw, compresslevel=1, mtime=0)
    result = CliRunner().invoke(cli, ["download", "--dataset", "fashion-mnist"])
    assert result.exit_code == 1
    assert "t10k-images-idx3-ubyte" in result.output and "not the publisher's .gz (MD5 mismatch" in result.output
    assert "BP_FASHION_MNIST_MIRROR" in result.output
    assert not (tmp_path / "data" / "fashion-mnist" / "t10k-images-idx3-ubyte").exists()


def test_an_unrecorded_file_pinned_by_md5_is_moved_aside_not_trusted(fashion, tmp_path):
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    # the right content, dropped in by hand as plain IDX: nothing can tell it is the publisher's
    good = gzip.decompress(fashion.files["/t10k-images-idx3-ubyte.gz"])
    (folder / "t10k-images-idx3-ubyte").write_bytes(good)
    result = CliRunner().invoke(cli, ["download", "--dataset", "fashion-mnist"])
    assert result.exit_code == 0, result.output
    assert (folder / "t10k-images-idx3-ubyte.rejected").read_bytes() == good
    assert "moved it to" in result.stderr and "not verified" in result.stderr
    # now recorded: a second run uses the cache, fetches nothing
    before = sum(fashion.hits.values())
    result = CliRunner().invoke(cli, ["download", "--dataset", "fashion-mnist", "--offline"])
    assert result.exit_code == 0, result.output
    assert sum(fashion.hits.values()) == before


def test_kmnist_pinned_by_md5_alone_verifies_every_file_and_its_cache(monkeypatch, make_server, tmp_path,
                                                                       clean_bp_env):
    served, specs = tiny_dataset(seed=2, md5_labels=True)
    server = make_server()
    server.files.update(served)
    ds = datasets.DATASETS["kmnist"]
    monkeypatch.setitem(datasets.DATASETS, "kmnist", ds._replace(files=specs, mirrors=("http://127.0.0.1:9/",)))
    data = tmp_path / "data"
    result = CliRunner().invoke(cli, ["download", "--dataset", "kmnist", "--mirror", server.url,
                                      "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    label_file = data / "kmnist" / "train-labels-idx1-ubyte"
    assert label_file.is_file() and (data / "kmnist" / "train-labels-idx1-ubyte.sha256").is_file()
    # a cached file that changes after its check is caught by the record, and moved aside
    flipped = bytearray(label_file.read_bytes())
    flipped[-1] = (flipped[-1] + 1) % 10
    label_file.write_bytes(bytes(flipped))
    result = CliRunner().invoke(cli, ["download", "--dataset", "kmnist", "--mirror", server.url,
                                      "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "checksum mismatch" in result.stderr and "moved it to" in result.stderr
    assert (data / "kmnist" / "train-labels-idx1-ubyte.rejected").read_bytes() == bytes(flipped)


def test_a_bad_cached_file_is_moved_aside_and_one_rejected_copy_is_kept(tmp_path, monkeypatch, make_server,
                                                                         clean_bp_env):
    contents, specs = make_tiny_mnist()
    monkeypatch.setattr(download, "MNIST_FILES", specs)
    server = make_server()
    server.add_gz(contents)
    data = tmp_path / "data"
    data.mkdir()
    name = "t10k-labels-idx1-ubyte"
    other = idx_bytes(np.array([9, 9, 9, 9], np.uint8))  # someone's other labels, same shape
    (data / name).write_bytes(other)
    args = ["download", "--mirror", server.url, "--data-dir", str(data)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (data / name).read_bytes() == contents[name]
    assert (data / (name + ".rejected")).read_bytes() == other  # never deleted
    assert f"moved it to {data / name}.rejected" in result.stderr

    newer = idx_bytes(np.array([8, 8, 8, 8], np.uint8))
    (data / name).write_bytes(newer)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (data / (name + ".rejected")).read_bytes() == newer  # the newest bad copy, not a pile
    assert [p.name for p in data.iterdir() if p.name.endswith(".rejected")] == [name + ".rejected"]


def test_when_the_fetch_fails_the_error_says_where_the_bad_file_went(tmp_path, monkeypatch, clean_bp_env,
                                                                    closed_port_url):
    contents, specs = make_tiny_mnist()
    monkeypatch.setattr(download, "MNIST_FILES", specs)
    data = tmp_path / "data"
    data.mkdir()
    for name, raw in contents.items():
        (data / name).write_bytes(raw)
    (data / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 2, 3, 4], np.uint8)))
    result = CliRunner().invoke(cli, ["download", "--mirror", closed_port_url, "--data-dir", str(data)])
    assert result.exit_code == 1
    assert "t10k-labels-idx1-ubyte.rejected" in result.stderr.splitlines()[-1]


# --- every command that can fetch takes --mirror and --offline ------------------------------

@pytest.fixture
def tiny_env(tmp_path, monkeypatch, make_server, clean_bp_env, no_internet):
    """Tiny MNIST on a loopback mirror, given by --mirror only (the built-in list would fail)."""
    contents, specs = make_tiny_mnist()
    monkeypatch.setattr(download, "MNIST_FILES", specs)
    monkeypatch.setattr(download, "DEFAULT_MIRRORS", ["http://127.0.0.1:9/"])
    server = make_server()
    server.add_gz(contents)
    return server


def _tiny_run(server, tmp_path, *extra, flag=True):
    """A tiny run's dir; the mirror given by --mirror, or (flag False) by $BP_MNIST_MIRROR."""
    mirror = ["--mirror", server.url] if flag else []
    result = CliRunner().invoke(cli, ["train", "--set", "data.validation=1", "--epochs", "1", "--batch-size", "2",
                                      "--hidden", "8", "--quiet", "--json", *mirror, *extra],
                                env={} if flag else {"BP_MNIST_MIRROR": server.url})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["run_dir"]


@pytest.mark.parametrize("command", [["evaluate", "{run}"], ["explain", "--model", "{run}", "--index", "0"],
                                     ["plot", "{run}", "--out", "{tmp}/pics"]])
def test_every_fetching_command_takes_mirror_and_offline(command, tiny_env, tmp_path):
    run = _tiny_run(tiny_env, tmp_path, "--data-dir", str(tmp_path / "train-data"))
    args = [a.format(run=run, tmp=tmp_path) for a in command]
    fresh = tmp_path / "fresh"
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(fresh), "--offline"])
    assert result.exit_code == 1 and "offline" in result.output and not any(fresh.glob("*-ubyte"))
    hits = sum(tiny_env.hits.values())
    result = CliRunner().invoke(cli, [*args, "--data-dir", str(fresh), "--mirror", tiny_env.url])
    assert result.exit_code == 0, result.output
    assert sum(tiny_env.hits.values()) > hits and (fresh / "t10k-images-idx3-ubyte").is_file()


def test_train_takes_mirror_and_offline(tiny_env, tmp_path):
    result = CliRunner().invoke(cli, ["train", "--offline", "--data-dir", str(tmp_path / "d"), "--quiet"])
    assert result.exit_code == 1 and "offline" in result.output
    _tiny_run(tiny_env, tmp_path, "--data-dir", str(tmp_path / "d"))
    assert (tmp_path / "d" / "train-images-idx3-ubyte").is_file()


# --- which data dir ---------------------------------------------------------------------------

def test_a_run_evaluated_from_another_folder_reads_its_data_and_downloads_nothing(tiny_env, tmp_path,
                                                                                   monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    run = _tiny_run(tiny_env, tmp_path, flag=False)   # ./data, from folder a
    hits = sum(tiny_env.hits.values())
    monkeypatch.chdir(tmp_path / "b")
    monkeypatch.setenv("BP_MNIST_MIRROR", tiny_env.url)   # the base code would have fetched from here
    for args in (["evaluate", run, "--json"], ["evaluate", run, "--split", "val"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
    assert not (tmp_path / "b" / "data").exists()   # no stray data/.lock, nothing downloaded
    assert sum(tiny_env.hits.values()) == hits
    # because the run recorded where its data was, not a path relative to where it ran
    assert f"dir: {tmp_path / 'a' / 'data'}" in (Path(run) / "config.yaml").read_text()


def test_bp_data_dir_beats_a_runs_recorded_dir_when_resuming(tiny_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _tiny_run(tiny_env, tmp_path, flag=False)   # ./data, verified
    monkeypatch.setenv("BP_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("BP_MNIST_MIRROR", tiny_env.url)
    result = CliRunner().invoke(cli, ["train", "--resume", run, "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env-data" / "t10k-images-idx3-ubyte").is_file()
    from bpcli.checkpoint import read_checkpoint

    _, meta = read_checkpoint(Path(run) / "last.npz", arrays=False)
    assert meta["config"]["data"]["dir"] == str(tmp_path / "env-data")


def test_bp_data_dir_beats_a_config_files_data_dir(tmp_path, monkeypatch, clean_bp_env):
    config = tmp_path / "run-config.yaml"
    config.write_text("data: {dir: /somewhere/it/ran}\n")
    monkeypatch.setenv("BP_DATA_DIR", str(tmp_path / "mine"))
    result = CliRunner().invoke(cli, ["config", "-c", str(config), "--sources"])
    assert result.exit_code == 0, result.output
    assert f"dir: {tmp_path / 'mine'}  # from $BP_DATA_DIR" in result.stdout
    result = CliRunner().invoke(cli, ["config", "-c", str(config), "--set", "data.dir=x"])
    assert "dir: x" in result.stdout  # the command line still beats the environment


def test_a_set_data_dir_beats_bp_data_dir_in_bp_train_as_in_bp_config(tmp_path, monkeypatch, clean_bp_env):
    from bpcli import launch

    monkeypatch.setenv("BP_DATA_DIR", str(tmp_path / "env"))
    given = ["data.dir=" + str(tmp_path / "typed")]
    plan = launch.plan(sets=given, run_dir=str(tmp_path / "run"))
    assert (plan.cfg.recipe.data.dir, plan.cfg.source["data.dir"]) == (str(tmp_path / "typed"), "--set")
    plan = launch.plan(sets=given, run_dir=str(tmp_path / "run"), data_dir=str(tmp_path / "flag"))
    assert (plan.cfg.recipe.data.dir, plan.cfg.source["data.dir"]) == (str(tmp_path / "flag"), "flag --data-dir")
    plan = launch.plan(run_dir=str(tmp_path / "run"))
    assert (plan.cfg.recipe.data.dir, plan.cfg.source["data.dir"]) == (str(tmp_path / "env"), "$BP_DATA_DIR")


def test_data_dataset_is_a_config_rule(clean_bp_env):
    result = CliRunner().invoke(cli, ["config", "--set", "data.dataset=fashion_mnist"])
    assert result.exit_code == 2
    assert "data.dataset" in result.output and "did you mean 'fashion-mnist'" in result.output
    result = CliRunner().invoke(cli, ["config"])
    assert "dataset: mnist" in result.stdout


def test_tune_trains_its_trials_on_the_base_configs_dataset(fashion, tmp_path):
    """Only Fashion-MNIST is served (MNIST is not in the data dir and cannot be fetched): a
    trial that loaded MNIST would fail; each trial's run records and evaluates on Fashion-MNIST."""
    pytest.importorskip("optuna", reason="the tune extra: pip install -e '.[tune]'")
    base = tmp_path / "fashion.yaml"
    base.write_text("data: {dataset: fashion-mnist, validation: 2}\nmodel: {hidden: [8]}\n"
                    "train: {epochs: 1, batch_size: 4}\n")
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 0.01, high: 0.1}\n")
    result = CliRunner().invoke(cli, ["tune", "-c", str(base), "--space", str(space), "--trials", "1",
                                      "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["counts"]["finished"] == 1
    assert not (tmp_path / "data" / "train-images-idx3-ubyte").exists()
    evaluated = CliRunner().invoke(cli, ["evaluate", doc["best_model"], "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["dataset"] == "fashion-mnist"

    space.write_text("data.dataset: {choices: [mnist, fashion-mnist]}\n")
    refused = CliRunner().invoke(cli, ["tune", "-c", str(base), "--space", str(space), "--trials", "1"])
    assert refused.exit_code == 2 and "'data.dataset' cannot be searched" in refused.output
