"""bp runs: every run under the runs root with how it ended, from its files alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bpcli.cli import cli
from bpcli.config import resolve
from bpcli.errors import TrainingDiverged
from bpcli.train import Interrupted, train
from synthetic import tiny_mnist
from test_train import BASE, SignalAt


@pytest.fixture(scope="module")
def data():
    return tiny_mnist(n_train=400, n_test=100)


def train_in(data, root, name, sets=(), **kw):
    return train(resolve(None, [*BASE, "train.epochs=2", *sets]), data, str(root / name), **kw)


def listing(root, *args):
    result = CliRunner().invoke(cli, ["runs", *args], env={"BP_RUNS_DIR": str(root)})
    assert result.exit_code == 0, result.output
    return result.output


def test_runs_lists_each_state_newest_first_and_marks_latest(data, runs_root):
    train_in(data, runs_root, "a-finished")
    with pytest.raises(TrainingDiverged):
        train_in(data, runs_root, "b-diverged", ["train.lr=1e30", "train.schedule=constant"])
    with pytest.raises(Interrupted):
        train_in(data, runs_root, "c-interrupted", progress=SignalAt(15))
    killed = runs_root / "d-killed"  # kill -9 mid-run: files, but no result.json and no live lock
    killed.mkdir()
    (killed / "config.yaml").write_text("model: {hidden: [8], activation: relu}\ntrain: {epochs: 9}\n")
    (killed / "metrics.jsonl").write_text('{"epoch": 1, "val_accuracy": 0.5, "seconds": 1.5}\n')
    from datetime import datetime

    for i, name in enumerate(["a-finished", "b-diverged", "c-interrupted"]):  # started one second apart
        result = json.loads((runs_root / name / "result.json").read_text())
        result["started"] = f"2026-01-01T00:00:0{i}"
        (runs_root / name / "result.json").write_text(json.dumps(result))
    later = datetime(2026, 1, 1, 0, 0, 3).timestamp()  # no result.json: its config.yaml's time
    os.utime(killed / "config.yaml", (later, later))
    runs = json.loads(listing(runs_root, "--json"))
    assert [r["name"] for r in runs] == ["d-killed", "c-interrupted", "b-diverged", "a-finished"]
    by = {r["name"]: r for r in runs}
    assert by["a-finished"]["state"] == "finished"
    # latest: the newest run with a model (c saved a best.npz after its first epoch; b never did)
    assert [r["name"] for r in runs if r["latest"]] == ["c-interrupted"]
    assert by["a-finished"]["epochs_done"] == by["a-finished"]["epochs_planned"] == 2
    assert 0 < by["a-finished"]["test_accuracy"] <= 1 and by["a-finished"]["network"] == "784-24-12-10 relu"
    assert by["b-diverged"]["state"] == "diverged" and not by["b-diverged"]["has_model"]
    assert by["c-interrupted"]["state"] == "interrupted" and by["c-interrupted"]["epochs_done"] == 1
    assert by["d-killed"]["state"] == "interrupted" and by["d-killed"]["epochs_planned"] == 9
    assert by["d-killed"]["best_val_accuracy"] == 0.5
    text = listing(runs_root)
    assert text.splitlines()[0].split() == ["run", "started", "network", "epochs", "best", "val", "test", "time",
                                            "state"]
    starred = [line for line in text.splitlines() if line.startswith("*")]
    assert len(starred) == 2 and "c-interrupted" in starred[0]  # and the legend line


def test_a_run_held_by_a_live_process_is_running(data, runs_root):
    train_in(data, runs_root, "r")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from bpcli import rundir; "
                               f"rundir.lock({str(runs_root / 'r')!r}); print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert json.loads(listing(runs_root, "--json"))[0]["state"] == "running"
    finally:
        holder.kill()
        holder.wait()
    assert json.loads(listing(runs_root, "--json"))[0]["state"] == "finished"


def test_damaged_run_files_blank_a_field_not_the_listing(runs_root):
    bad = runs_root / "bad"
    bad.mkdir(parents=True)
    (bad / "config.yaml").write_text("[[[[ not yaml")
    (bad / "metrics.jsonl").write_text('not json\n[1, 2]\n{"epoch": 1, "val_accuracy": "high"}\n' + "[" * 100_000 + "\n")
    (bad / "result.json").write_text('{"state": "finished", "test_accuracy": NaN')
    os.mkfifo(bad / "best.npz")
    run, = json.loads(listing(runs_root, "--json"))
    assert run["network"] is None and run["best_val_accuracy"] is None and run["test_accuracy"] is None
    assert run["state"] == "interrupted" and run["epochs_done"] == 1


def test_no_runs_says_how_to_start(tmp_path):
    assert "start one with 'bp train'" in listing(tmp_path / "nothing")


def test_a_yaml_bomb_in_a_runs_config_is_not_expanded(runs_root):
    bomb = runs_root / "bomb"
    bomb.mkdir(parents=True)
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    (bomb / "config.yaml").write_text("\n".join(lines) + "\n")
    (bomb / "metrics.jsonl").write_text('{"epoch": 1}\n')
    result = subprocess.run([sys.executable, "-m", "bpcli.cli", "runs", "--json"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "BP_RUNS_DIR": str(runs_root)})
    assert result.returncode == 0 and json.loads(result.stdout)[0]["network"] is None


def test_a_run_that_failed_says_so(data, runs_root, monkeypatch):
    import bpcli.train as train_mod

    def full_disk(self, name, with_optimizer=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_mod.Run, "save", full_disk)
    with pytest.raises(OSError):
        train_in(data, runs_root, "f")
    result = json.loads((runs_root / "f" / "result.json").read_text())
    assert result["state"] == "failed" and "No space" in result["error"] and result["started"]
    run, = json.loads(listing(runs_root, "--json"))
    assert run["state"] == "failed"


def test_a_resumed_runs_time_is_every_parts_time(data, runs_root):
    """Interrupted after an epoch, then resumed and extended: the listed time covers all
    three parts, not only the last one."""
    from bpcli import record

    with pytest.raises(Interrupted):
        train_in(data, runs_root, "r", progress=SignalAt(15))
    first = record.number(record.read(str(runs_root / "r")), "total_seconds")
    train(resolve(None, [*BASE, "train.epochs=2"]), data, str(runs_root / "r"),
          resume_from=str(runs_root / "r" / "last.npz"))
    second = record.read(str(runs_root / "r"))
    assert second["total_seconds"] > first > 0 and second["total_seconds"] > second["seconds"]
    cfg = resolve(None, [*BASE, "train.epochs=3"])
    last = train(cfg, data, str(runs_root / "r"), resume_from=str(runs_root / "r" / "last.npz"))
    run, = json.loads(listing(runs_root, "--json"))
    assert run["state"] == "finished" and run["epochs_done"] == 3
    assert run["seconds"] == pytest.approx(second["total_seconds"] + last["seconds"], rel=0.2)
    assert run["seconds"] > last["seconds"] + first


def test_every_state_bp_writes_is_listed_as_itself(runs_root):
    from bpcli import record

    for state in record.STATES:
        folder = runs_root / state
        folder.mkdir(parents=True)
        (folder / "last.npz").write_bytes(b"")  # a run of bp's (its files), held by nobody
        record.write(str(folder), state, started="2026-01-01T00:00:00")
    by = {r["name"]: r["state"] for r in json.loads(listing(runs_root, "--json"))}
    # a record still saying running, in a run dir nobody holds: killed mid-run
    assert by == {**{s: s for s in record.STATES}, record.RUNNING: "interrupted"}
    table = listing(runs_root)
    assert any(line.split()[:1] == ["pruned"] and line.split()[-1] == "pruned" for line in table.splitlines())


# ---------------------------------------------------------------------------
# A run's files as hostile input: every field printed escaped, no number kills the listing

TITLE = "\x1b]0;owned\x07"          # a terminal's set-title sequence
CLIPBOARD = "\x1b]52;c;aGk=\x07"    # a clipboard write
CSI = "\x9b2J"                      # the one-byte CSI (clear screen) of C1 controls


def raw_controls(text):
    """The control characters of ``text`` a terminal would act on (newlines between lines aside)."""
    return [ch for line in text.splitlines() for ch in line if not ch.isprintable()]


def a_run(root, name="r", config=None, metrics=None, result=None):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "last.npz").write_bytes(b"")
    if config is not None:
        (folder / "config.yaml").write_text(config)
    if metrics is not None:
        (folder / "metrics.jsonl").write_text(metrics)
    if result is not None:
        (folder / "result.json").write_text(result if isinstance(result, str) else json.dumps(result))
    return folder


def both_listings(root):
    """The table and the --json document (which must stay valid JSON)."""
    return listing(root), json.loads(listing(root, "--json"))


def test_a_run_name_with_escape_sequences_is_printed_escaped(runs_root):
    a_run(runs_root, "run" + TITLE + CSI)
    text, doc = both_listings(runs_root)
    assert not raw_controls(text) and "\\x1b]0;owned\\x07" in text
    assert doc[0]["name"] == "run" + TITLE + CSI  # JSON escapes it itself, and keeps it exact


def test_a_started_time_with_escape_sequences_is_printed_escaped(runs_root):
    a_run(runs_root, result={"state": "finished", "started": CLIPBOARD + "2026"})
    text, doc = both_listings(runs_root)
    assert not raw_controls(text) and "\\x1b]52" in text


def test_an_activation_with_escape_sequences_is_printed_escaped(runs_root):
    a_run(runs_root, config=json.dumps({"model": {"hidden": [8], "activation": "relu" + CSI + TITLE}}))
    text, doc = both_listings(runs_root)
    assert not raw_controls(text) and "784-8-10 relu" in text
    assert not raw_controls(doc[0]["network"])


def test_a_state_that_bp_does_not_write_is_not_printed(runs_root):
    a_run(runs_root, result={"state": "finished" + TITLE})
    text, doc = both_listings(runs_root)
    assert not raw_controls(text) and doc[0]["state"] == "interrupted"


def test_a_runs_root_with_escape_sequences_is_printed_escaped(tmp_path):
    root = tmp_path / ("runs" + TITLE)
    assert not raw_controls(listing(root))  # no runs yet: the message names the root
    a_run(root, "r")
    text = listing(root)
    assert not raw_controls(text) and "\\x1b]0;owned" in text.splitlines()[-1]


@pytest.mark.parametrize("number", ["1e400", "-1e400", "NaN", "Infinity", "1.7e308", str(10**400), str(10**308)])
def test_no_number_in_a_runs_files_kills_the_listing_or_shows_as_nan(runs_root, number):
    result = ('{"state": "finished", "test_accuracy": %s, "total_seconds": %s, "seconds": %s}'
              % (number, number, number))
    metrics = "".join('{"epoch": %d, "val_accuracy": %s, "seconds": %s}\n' % (i, number, number) for i in (1, 2))
    a_run(runs_root, config="model: {hidden: [8], activation: relu}\ntrain: {epochs: %s}\n" % number,
          metrics=metrics, result=result)
    text, doc = both_listings(runs_root)
    row = text.splitlines()[1]
    assert "nan" not in row.lower() and "inf" not in row.lower(), row
    assert len(row) < 200, row  # a number past any real run's is not printed in full
    run, = doc
    assert run["test_accuracy"] is None and run["best_val_accuracy"] is None
    assert run["epochs_planned"] is None  # not a train.epochs bp accepts
    assert run["seconds"] is None or run["seconds"] < float("inf")


@pytest.mark.parametrize("number", ["-1e308", "-5", "-0.5"])
def test_a_negative_time_in_a_runs_files_shows_as_no_time(runs_root, number):
    a_run(runs_root, result='{"state": "finished", "total_seconds": %s, "seconds": %s}' % (number, number),
          metrics='{"epoch": 1, "seconds": %s}\n' % number)
    text, doc = both_listings(runs_root)
    row = text.splitlines()[1]
    assert doc[0]["seconds"] is None and len(row) < 200, row


@pytest.mark.parametrize("hidden", ["[-5, 0, 8]", "[0]", "[" + ",".join(["8"] * 5000) + "]", "[8, 1.5]"])
def test_layer_sizes_bp_would_refuse_name_no_network(runs_root, hidden):
    a_run(runs_root, config="model: {hidden: %s, activation: relu}\n" % hidden)
    text, doc = both_listings(runs_root)
    assert doc[0]["network"] is None and len(text.splitlines()[1]) < 200


@pytest.mark.parametrize("target", ["/", "elsewhere-empty"])
def test_a_latest_link_to_a_folder_without_a_run_adds_no_row(runs_root, tmp_path, target):
    a_run(runs_root, "r", result={"state": "finished"})
    target = tmp_path / target if target != "/" else Path("/")
    target.mkdir(exist_ok=True)
    (runs_root / "latest").symlink_to(target)
    text, doc = both_listings(runs_root)
    assert [r["name"] for r in doc] == ["r"], doc
