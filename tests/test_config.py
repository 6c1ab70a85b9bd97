"""Config precedence and every kind of config error (exit 2, the key named, a suggestion)."""

import pytest
from click.testing import CliRunner

from bpcli.cli import cli
from bpcli.config import DEFAULTS, RULES, flatten, parse_set, resolve
from bpcli.errors import ConfigError


def test_every_default_has_a_rule_and_passes_it():
    flat = flatten(DEFAULTS)
    assert set(flat) == set(RULES)
    for key, value in flat.items():
        assert RULES[key](value) is None, key


def test_precedence_defaults_file_set_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {lr: 0.5, epochs: 3, momentum: 0.5}\nmodel: {hidden: [8]}\n")
    cfg = resolve(f, ["train.lr=0.25", "model.activation=tanh", "train.momentum=0.8"],
                  {"train.lr": 0.125, "seed": None})
    v = cfg.values
    assert v["train"]["lr"] == 0.125           # flag beats --set beats file
    assert v["train"]["momentum"] == 0.8       # --set beats file
    assert v["train"]["epochs"] == 3           # file beats default
    assert v["model"]["activation"] == "tanh"  # --set beats default
    assert v["model"]["hidden"] == [8]
    assert v["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]
    assert cfg.source["train.lr"] == "flag --lr" and cfg.source["train.epochs"] == str(f)


def test_cli_order_does_not_matter(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train: {lr: 0.5}\n")
    r1 = CliRunner().invoke(cli, ["config", "--set", "train.lr=0.2", "-c", str(f)])
    r2 = CliRunner().invoke(cli, ["config", "-c", str(f), "--set", "train.lr=0.2"])
    assert r1.exit_code == 0, r1.output
    assert r1.output == r2.output and "lr: 0.2" in r1.output


def test_set_parses_yaml_values():
    assert parse_set("model.hidden=[64,32]") == ("model.hidden", [64, 32])
    assert parse_set("train.nesterov=false") == ("train.nesterov", False)
    assert parse_set("data.limit=null") == ("data.limit", None)
    assert parse_set("train.lr=1e-3") == ("train.lr", 1e-3)


BAD = [
    (["--set", "trian.lr=0.1"], "'trian.lr'", "train.lr"),
    (["--set", "lr=0.1"], "'lr'", "train.lr"),
    (["--set", "model.activaton=relu"], "model.activaton", "model.activation"),
    (["--set", "train.lr=0"], "train.lr", "> 0"),
    (["--set", "train.lr=-1"], "train.lr", "> 0"),
    (["--set", "train.lr=.nan"], "train.lr", "finite"),
    (["--set", "train.lr=.inf"], "train.lr", "finite"),
    (["--set", "train.lr=fast"], "train.lr", "number"),
    (["--set", "train.batch_size=0"], "train.batch_size", ">= 1"),
    (["--set", "train.batch_size=1.5"], "train.batch_size", "integer"),
    (["--set", "train.epochs=true"], "train.epochs", "integer"),
    (["--set", "model.dropout=1"], "model.dropout", "< 1"),
    (["--set", "model.dropout=-0.1"], "model.dropout", ">= 0"),
    (["--set", "model.activation=rlu"], "model.activation", "relu"),
    (["--set", "model.hidden=64"], "model.hidden", "list"),
    (["--set", "model.hidden=[0]"], "model.hidden", ">= 1"),
    (["--set", "model.hidden=[1000000000]"], "model.hidden", "GiB"),
    (["--set", "model.hidden=[100000,100000,100000]"], "model.hidden", "GiB to train"),
    (["--set", "train.nesterov=maybe"], "train.nesterov", "true or false"),
    (["--set", "model=3"], "'model'", "map"),
    (["--set", "noequals"], "KEY=VALUE", "train.lr"),
    (["--set", "train.augment={shfit: 2}"], "train.augment", "did you mean 'shift'"),
    (["--set", "train.augment={rotate: -5}"], "train.augment", ">= 0"),
    (["--set", "train.augment=yes"], "train.augment", "map of transforms"),
    (["--set", "train.augment={scale: 1.0}"], "train.augment", "<= 0.9"),
    (["--set", "train.lr=[1"], "train.lr", "YAML"),
]


@pytest.mark.parametrize("args,names,hint", BAD)
def test_config_errors_exit_2_naming_the_key(args, names, hint):
    result = CliRunner().invoke(cli, ["config", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert names in lines[0] and hint in lines[0]


@pytest.mark.parametrize("text,needle", [
    ("train: {lr: [1, 2}\n", "not valid YAML"),
    ("- 1\n- 2\n", "expected a map"),
    ("train: 3\n", "must be a map"),
    ("trainn: {lr: 1}\n", "did you mean 'train"),
    ("\xff\xfe", "cannot read"),
    ("train:\n  lr: 0.5\n  epochs: 3\n  lr: 0.05\n", "key 'lr' appears twice"),  # PyYAML kept the last, silently
    ("train: {lr: 0.5}\ntrain: {epochs: 3}\n", "key 'train' appears twice"),
])
def test_bad_config_files(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_bytes(text.encode("latin-1"))
    result = CliRunner().invoke(cli, ["config", "-c", str(f)])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_missing_config_file(tmp_path):
    result = CliRunner().invoke(cli, ["config", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "not found" in result.output


def test_empty_config_file_is_all_defaults(tmp_path):
    f = tmp_path / "empty.yaml"
    f.write_text("")
    assert resolve(f).values == resolve().values


def test_config_sources_are_shown(tmp_path):
    result = CliRunner().invoke(cli, ["config", "--sources", "--set", "train.lr=0.3"])
    assert result.exit_code == 0
    assert "lr: 0.3  # from --set" in result.output


def test_shipped_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        resolve(path)  # raises ConfigError if any key or value is wrong


from hypothesis import example, given, settings
from hypothesis import strategies as st

from bpcli.config import Config

yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(RULES)) | st.text(max_size=12), value=yaml_values)
@example(key="\n", value=1)  # once printed a two-line error
@example(key="train.augment", value={"a\nb": 1})
def test_any_value_for_any_key_is_accepted_or_a_config_error(key, value):
    cfg = Config()
    try:
        cfg.set(key, value, "--set")
    except ConfigError as err:
        assert "\n" not in str(err) and str(err)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_any_config_file_text_is_accepted_or_a_config_error(tmp_path_factory, text):
    f = tmp_path_factory.mktemp("cfg") / "c.yaml"
    f.write_text(text, encoding="utf-8")
    try:
        resolve(f)
    except ConfigError as err:
        assert str(err)


def test_conflicting_flags_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path), "-c", "smoke"])
    assert result.exit_code == 2 and "--resume" in result.output


# ---------------------------------------------------------------------------
# Config files and values as hostile input (issue 12)

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bpcli import config as config_mod

REPO = Path(__file__).parents[1]


def bp_subprocess(args, timeout=60, memory=2**30):
    """``python -m bpcli.cli ARGS`` that cannot hang the suite or eat the machine: it is
    killed after ``timeout`` seconds (TimeoutExpired fails the test) and, on POSIX, its
    address space is capped at ``memory`` bytes (a blow-up is a MemoryError, not swap)."""
    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([sys.executable, "-m", "bpcli.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit if os.name == "posix" else None)


def one_error_line(output):
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output[:2000]
    assert "Traceback" not in output
    return lines[0]


def billion_laughs():
    """396 bytes of YAML whose last alias expands to 9**9 (387 million) strings; under
    model.hidden, where the old error message printed the whole value."""
    parts = ["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        parts.append(f"&{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "model:\n  hidden: [" + ", ".join(parts) + "]\n"


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert bomb.stat().st_size < 400
    result = bp_subprocess(["config", "-c", str(bomb)])
    assert result.returncode == 2, result.stderr[-2000:]
    line = one_error_line(result.stderr)
    assert "aliases" in line and "line 2" in line


def test_yaml_aliases_are_refused_in_set_values_too():
    result = CliRunner().invoke(cli, ["config", "--set", "model.hidden=[&a 8, *a]"])
    assert result.exit_code == 2
    assert "aliases" in one_error_line(result.output)


@pytest.mark.parametrize("deep", [
    "[" * 5000 + "]" * 5000,                      # 10 KB of nested lists
    "{a: " * 3000 + "1" + "}" * 3000,             # nested maps
    "train:\n  augment: " + "[" * 40 + "]" * 40,  # just past the bound, under a real key
])
def test_deep_nesting_is_a_clean_error(tmp_path, deep):
    f = tmp_path / "deep.yaml"
    f.write_text(deep)
    result = CliRunner().invoke(cli, ["config", "-c", str(f)])
    assert result.exit_code == 2, result.output[-2000:]
    assert f"nested more than {config_mod.MAX_DEPTH} levels" in one_error_line(result.output)
    from_set = CliRunner().invoke(cli, ["config", "--set", "train.augment=" + "[" * 5000 + "]" * 5000])
    assert from_set.exit_code == 2 and "nested" in one_error_line(from_set.output)


def test_nesting_within_the_bound_still_parses():
    key, value = parse_set("train.augment=" + "[" * 20 + "]" * 20)
    expected = []
    for _ in range(19):
        expected = [expected]
    assert key == "train.augment" and value == expected


def test_a_huge_config_file_is_refused_before_it_is_read(tmp_path):
    f = tmp_path / "huge.yaml"
    f.write_text("seed: 1\n" + "# padding\n" * 100_000)  # valid YAML, 1 MB
    result = CliRunner().invoke(cli, ["config", "-c", str(f)])
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert "over bp's limit of 65,536" in line and "1,000,008 bytes" in line


def test_a_huge_set_value_is_refused():
    result = CliRunner().invoke(cli, ["config", "--set", "model.hidden=[" + "1," * 40_000 + "1]"])
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert "over bp's limit" in line and len(line) < 200


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_a_fifo_config_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    result = bp_subprocess(["config", "-c", str(fifo)], timeout=30)  # nobody ever writes to it
    assert result.returncode == 2
    assert "named pipe" in one_error_line(result.stderr)


def test_a_config_folder_is_refused(tmp_path):
    result = CliRunner().invoke(cli, ["config", "-c", str(tmp_path)])
    assert result.exit_code == 2 and "folder" in one_error_line(result.output)


def test_a_million_layers_are_refused_in_a_short_message():
    cfg = Config()
    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        cfg.set("model.hidden", [1] * 1_000_000, "--set")
    assert "1,000,000 hidden layers" in str(err.value) and f"at most {config_mod.MAX_LAYERS}" in str(err.value)
    assert len(str(err.value)) < 200
    assert time.perf_counter() - started < 5  # generous: a bound that does not scan forever
    result = CliRunner().invoke(cli, ["config", "--set", f"model.hidden=[{', '.join(['1'] * 101)}]"])
    assert result.exit_code == 2 and "101 hidden layers" in one_error_line(result.output)
    cfg.set("model.hidden", [8] * config_mod.MAX_LAYERS, "--set")  # the bound itself is fine


@pytest.mark.parametrize("args", [
    ["--set", "model.activation=[" + ", ".join(map(str, range(8000))) + "]"],  # ~47 KB value
    ["--set", "model.hidden=" + "x" * 50_000],
    ["--set", "train.augment={" + "shfit" * 10_000 + ": 2}"],
    ["--set", "model=[" + "1, " * 20_000 + "1]"],
    ["--set", "x" * 50_000 + "=1"],
    ["--set", "train.lr=" + "[" * 30 + "x" * 50_000],
    ["--hidden", "1," * 30_000 + "x"],
])
def test_a_huge_value_is_never_printed_whole(args):
    result = CliRunner().invoke(cli, ["config" if args[0] == "--set" else "train", *args])
    assert result.exit_code == 2
    assert len(one_error_line(result.output)) < 300


def test_a_huge_key_in_a_file_is_shown_cut_and_escaped(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text('? "' + "\\n" * 20_000 + '"\n: 1\n')  # a key of 20,000 newlines (YAML's long-key form)
    result = CliRunner().invoke(cli, ["config", "-c", str(f)])
    assert result.exit_code == 2
    line = one_error_line(result.output)
    assert "unknown config key" in line and len(line) < 300


def test_shown_values_are_bounded_whatever_the_value():
    nested = ["lol"] * 9
    for _ in range(9):
        nested = [nested] * 9  # a full repr would be gigabytes
    for value in (nested, 10**5000, "a\nb" * 10_000, {"k" * 10_000: 1}, b"\x00" * 10_000):
        text = config_mod.shown(value)
        assert len(text) <= 60 and text.isprintable()


@pytest.mark.parametrize("assignment,needle", [
    # each of these got through validation and crashed later (or in the validator)
    ("train.augment={elastic: 34, elastic_sigma: 1e-300}", ">= 0.1"),   # nan Gaussian: IndexError
    ("train.augment={elastic: 34, elastic_sigma: 0.01}", ">= 0.1"),
    ("train.augment={scale: 0.99999999}", "<= 0.9"),  # float32 1 + u == 0: 0/0 sources
    ("train.step_size=1" + "0" * 400, "<= 1,000,000"),  # OverflowError in the step schedule
    ("train.epochs=1" + "0" * 400, "<= 1,000,000"),     # OverflowError in the cosine schedule
    ("train.warmup_epochs=1" + "0" * 400, "finite"),    # OverflowError in the validator
    ("train.lr=1" + "0" * 400, "finite"),
    ("train.max_norm=1" + "0" * 400, "finite"),
    ("seed=1" + "0" * 5000, "too long"),                # ValueError in the YAML loader
    ("seed=340282366920938463463374607431768211456", "128 bits"),  # 2**128
    ("train.batch_size=60001", "60,000 training images"),
])
def test_values_that_used_to_crash_are_config_errors(assignment, needle):
    result = CliRunner().invoke(cli, ["config", "--set", assignment])
    assert result.exit_code == 2, result.output[-2000:]
    line = one_error_line(result.output)
    assert needle in line and len(line) < 300


def test_validation_must_leave_training_images():
    with pytest.raises(ConfigError, match="data.validation.*data.limit 10"):
        resolve(None, ["data.limit=10", "data.validation=10"])
    resolve(None, ["data.limit=10", "data.validation=9"])


def test_the_augment_bounds_are_safe_for_the_augmenter():
    """Every transform at the edge its rule allows, with the worst draw: finite pixels in [0, 1]."""
    from bpcli.augment import Augmenter

    class Extreme:  # uniform() returns an end of its range; random() a fixed field
        def __init__(self, end):
            self.end, self.rng = end, np.random.default_rng(0)

        def uniform(self, low, high, size):
            return np.full(size, low if self.end < 0 else high)

        def random(self, shape, dtype, out):
            return self.rng.random(shape, dtype=dtype, out=out)

    edge = {"shift": 14.0, "rotate": 180.0, "scale": 0.9, "shear": 2.0, "elastic": 100.0, "elastic_sigma": 0.1}
    assert set(edge) == set(config_mod.AUGMENT)
    for key, value in edge.items():  # the edge is what the rule allows, and no further
        assert config_mod.AUGMENT[key](value) is None, key
        step = 1e-9 if key != "elastic_sigma" else -1e-9
        assert config_mod.AUGMENT[key](value + step) is not None, key
    X = np.random.default_rng(1).integers(0, 256, (4, 784), dtype=np.uint8)
    for end in (-1, 1):
        out = Augmenter(edge, len(X))(X, Extreme(end))
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_memory_check_counts_the_batch_buffers(monkeypatch):
    """[4096, 4096] has 20M parameters (~0.5 GiB to train); a batch of 60,000 adds
    60,000 rows of every layer's activations and deltas (~4 GiB)."""
    monkeypatch.setattr(config_mod, "_memory_bytes", lambda: 4 * 2**30)
    resolve(None, ["model.hidden=[4096, 4096]", "train.batch_size=128"])
    with pytest.raises(ConfigError) as err:
        resolve(None, ["model.hidden=[4096, 4096]", "train.batch_size=60000"])
    message = str(err.value)
    assert "'train.batch_size' (--set) 60,000" in message and "this machine has 4.0 GiB" in message
    with pytest.raises(ConfigError, match="'model.hidden'.*parameters"):
        resolve(None, ["model.hidden=[50000, 50000]"])


def test_memory_check_comes_before_any_run_dir_or_data(monkeypatch, tmp_path):
    monkeypatch.setattr(config_mod, "_memory_bytes", lambda: 4 * 2**30)
    env = {"BP_RUNS_DIR": str(tmp_path / "runs"), "BP_DATA_DIR": str(tmp_path / "data"), "BP_OFFLINE": "1"}
    result = CliRunner().invoke(cli, ["train", "--hidden", "4096,4096", "--batch-size", "60000"], env=env)
    assert result.exit_code == 2
    assert "flag --batch-size" in one_error_line(result.output)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_the_memory_count_and_the_trainer_share_one_definition_of_each_size():
    """budget.py defines the sizes train and metrics allocate by; none is copied."""
    import re
    from pathlib import Path

    from bpcli import budget, metrics, train

    assert train.TALLY_EVERY is budget.TALLY_EVERY and metrics.EVAL_BATCH is budget.EVAL_BATCH
    assert config_mod.training_bytes is budget.training_bytes
    package = Path(budget.__file__).parent
    for name in ("TALLY_EVERY", "EVAL_BATCH", "N_TRAIN", "N_TEST", "BYTES_PER_PARAM"):
        owners = [p.name for p in package.rglob("*.py") if re.search(rf"^{name} =", p.read_text(), re.M)]
        assert owners == ["budget.py"], (name, owners)


def test_evaluation_is_counted_for_the_batches_scored_at_once():
    """A batch of EVAL_BATCH rows per thread, but no more than the largest split has."""
    from bpcli.budget import EVAL_BATCH, N_TEST

    recipe = resolve("default").recipe
    one = config_mod.training_bytes(recipe, threads=1)["evaluation"]
    assert config_mod.training_bytes(recipe, threads=2)["evaluation"] == 2 * one
    assert config_mod.training_bytes(recipe, threads=64)["evaluation"] == (N_TEST // EVAL_BATCH) * one
    larger = resolve("default", ["data.validation=30000"]).recipe
    assert config_mod.training_bytes(larger, threads=64)["evaluation"] == (30_000 // EVAL_BATCH) * one


@pytest.mark.parametrize("sets", [
    ["train.batch_size=2048", "model.hidden=[512, 256]", "train.optimizer=adam", "model.dropout=0.5",
     "train.augment={elastic: 34, shift: 2}"],
    ["train.batch_size=4096", "model.hidden=[300]"],
    ["train.batch_size=16", "model.hidden=[1000, 1000]", "train.optimizer=adam"],
])
def test_the_memory_count_covers_a_measured_training_run(tmp_path, sets, monkeypatch):
    """training_bytes is counted by reading train.py, fast/ and augment.py; hold it to what
    a real run allocates (numpy reports its arrays to tracemalloc). The data here is tiny,
    so its share (and evaluation's, 50 rows) is left out of the comparison. On worker
    threads: tracemalloc does not see the shared mappings that the same arrays live in
    for worker processes."""
    import tracemalloc

    monkeypatch.setenv("BP_WORKERS", "threads")

    from bpcli.train import train
    from synthetic import tiny_mnist

    data = tiny_mnist(n_train=300, n_test=50)
    cfg = resolve(None, ["data.validation=50", "train.epochs=1", *sets])
    part = config_mod.training_bytes(cfg.recipe, threads=2)
    counted = part["parameters"] + part["batch"]
    tracemalloc.start()
    try:
        train(cfg, data, str(tmp_path / "run"), threads=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= counted, (peak / 2**20, counted / 2**20)
    assert peak >= 0.4 * counted, (peak / 2**20, counted / 2**20)  # a count, not a guess 10x too big


# --- built-in recipes ------------------------------------------------------------

def test_the_built_in_defaults_are_the_default_recipe():
    """A bare `bp train` (say after pipx install) trains the README's main job."""
    from bpcli.config import resolve

    assert resolve("default").values == resolve(None).values


def test_a_recipe_is_named_or_a_path_wins(tmp_path, monkeypatch):
    from bpcli.config import resolve

    assert resolve("seed").values["model"]["hidden"] == [16, 16]
    assert resolve("seed.yaml").values == resolve("seed").values
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed").write_text("model: {hidden: [7]}\n")
    assert resolve("seed").values["model"]["hidden"] == [7]  # a file of that name wins


def test_every_recipe_says_what_it_measured():
    from bpcli.config import recipe_table

    rows = recipe_table()
    assert {r["name"] for r in rows} >= {"seed", "nielsen", "nielsen-ce-l2", "fast", "simard-affine", "default",
                                        "best", "smoke"}
    for r in rows:
        assert r["measured"] and "% test in" in r["measured"], r


def test_readme_reports_each_recipe_as_its_measured_line():
    """One figure in two places: README's results table says what `bp config --list`
    does (the recipe's '# measured:' line): mean, sd, minimum and wall time."""
    import re
    from pathlib import Path

    from bpcli.config import recipe_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for r in recipe_table():
        line = re.search(rf"^\| \**`{re.escape(r['name'])}`\**( \|[^\n]*)$", readme, re.M)
        assert line, f"README's results table has no row for {r['name']}"
        cells = [c.strip().strip("*¹²") for c in line.group(1).split("|")[1:-1]]
        wall, accuracy = cells[-3], cells[-2]
        shown = re.fullmatch(r"(\d+\.\d+)% ± (\d+\.\d+)% \((\d+\.\d+)%\)", accuracy)
        assert shown, (r["name"], cells)
        mean, sd, low = shown.groups()
        measured = re.match(r"(\d+\.\d+)% \+- (\d+\.\d+)% test in (\d+(?:\.\d+)? (?:s|min)) \(.*\bmin (\d+\.\d+)%",
                            r["measured"])
        assert measured, r["measured"]
        assert measured.groups() == (mean, sd, wall, low), (r["name"], measured.groups(), cells)


def test_an_installed_bp_carries_its_recipes(tmp_path):
    """pip install (not -e) of a clean copy ships the recipes: -c seed works outside the repo."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(target), str(repo)], check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in (target / "bpcli" / "configs").glob("*.yaml")) == \
        sorted(p.name for p in (repo / "bpcli" / "configs").glob("*.yaml"))
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "bpcli.cli", "config", "-c", "seed"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "hidden: [16, 16]  " not in out.stdout and "hidden: [16, 16]" in out.stdout
    listed = subprocess.run([sys.executable, "-m", "bpcli.cli", "config", "--list"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "784-16-16-10 sigmoid" in listed.stdout
    shutil.rmtree(target)


def test_the_manuals_key_table_is_bp_config_keys():
    """One table of keys (config.KEYS): the manual prints what bp config --keys prints."""
    from pathlib import Path

    manual = (Path(__file__).resolve().parents[1] / "docs" / "manual.md").read_text(encoding="utf-8")
    shown = CliRunner().invoke(cli, ["config", "--keys"])
    assert shown.exit_code == 0 and shown.output.strip() in manual
    assert [line.split("`")[1] for line in shown.output.splitlines()[2:]] == list(RULES)


def test_every_key_is_declared_once_with_its_default_rule_and_help():
    from bpcli.config import KEYS

    assert flatten(DEFAULTS) == {key.path: key.default for key in KEYS}
    for key in KEYS:
        assert key.rule(key.default) is None, key.path  # every default passes its own rule
        assert key.accepts and key.help, key.path
