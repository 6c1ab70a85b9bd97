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
    result = CliRunner().invoke(cli, ["train", "--resume", str(tmp_path), "-c", "configs/smoke.yaml"])
    assert result.exit_code == 2 and "--resume" in result.output
