"""bp tune: the space file as hostile input, the trial-count rule, pruning, and whole searches:
in-process, 2 worker processes on the default storage, Ctrl-C and a re-run, and two "machines"
sharing a real PostgreSQL server (a throwaway cluster this module starts), one killed with kill -9."""

import contextlib
import glob
import json
import os
import shutil
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bpcli.cli import cli
from bpcli.errors import ConfigError

optuna = pytest.importorskip("optuna", reason="the tune extra: pip install -e '.[tune]'")

from bpcli import tune  # noqa: E402  (needs optuna for most of what is tested)

# a trial of a second or two: 1,000 images, one small hidden layer
TINY = """\
data: {limit: 1000, validation: 200}
model: {hidden: [16]}
train: {epochs: 2, batch_size: 50}
"""
SPACE = """\
train.lr: {low: 0.02, high: 0.3, log: true}
train.momentum: {choices: [0.0, 0.9]}
"""


def write(folder, name, text):
    path = Path(folder) / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def files(tmp_path):
    return write(tmp_path, "tiny.yaml", TINY), write(tmp_path, "space.yaml", SPACE)


@pytest.fixture
def env(mnist_data_dir, monkeypatch):
    monkeypatch.setenv("BP_DATA_DIR", str(mnist_data_dir))
    monkeypatch.setenv("BP_OFFLINE", "1")
    return os.environ


def bp(*args, **kw):
    """A real bp process (the console entry point), stdout and stderr captured."""
    kw.setdefault("env", {**os.environ, "PYTHONFAULTHANDLER": "1"})
    return subprocess.Popen([sys.executable, "-m", "bpcli.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def one_error_line(stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def study_trials(url, name):
    study = optuna.load_study(study_name=name, storage=url)
    return study.get_trials(deepcopy=False)


def without_surplus(trials):
    """The study's trials less those tune's N rule failed as surplus: when two workers both
    ask for the last trial, the loser is failed before it trains (never lost, never run twice)."""
    surplus = [t for t in trials if t.state.name == "FAIL" and t.user_attrs.get("surplus")]
    assert all("run_dir" not in t.user_attrs for t in surplus)  # a surplus trial never trained
    return [t for t in trials if t not in surplus]


def states(trials):
    """Each trial's state, COMPLETE and PRUNED both "FINISHED" (which the pruner picks is not the point)."""
    return sorted("FINISHED" if t.state.name in ("COMPLETE", "PRUNED") else t.state.name for t in trials)


# ---------------------------------------------------------------------------
# The space file

def test_space_ranges_choices_and_sections(tmp_path):
    path = write(tmp_path, "s.yaml", """\
train.lr: {low: 0.01, high: 0.5, log: true}
train.epochs: {low: 5, high: 30, step: 5}
model:
  hidden: {choices: [[256, 128], [512, 256]]}
train.augment: {choices: [false, {shift: 2, rotate: 10}]}
train.label_smoothing: {low: 0, high: 0.2}
""")
    space = tune.space.read_space(path)
    assert list(space) == ["train.lr", "train.epochs", "model.hidden", "train.augment", "train.label_smoothing"]
    assert space["train.epochs"].integer and not space["train.lr"].integer
    assert not space["train.label_smoothing"].integer  # 0 written as an int: the key is still a float
    trial = optuna.create_study().ask()
    values = {k: p.suggest(trial) for k, p in space.items()}
    assert isinstance(values["train.epochs"], int) and values["train.epochs"] in (5, 10, 15, 20, 25, 30)
    assert 0.01 <= values["train.lr"] <= 0.5
    assert values["model.hidden"] in ([256, 128], [512, 256])  # lists come back as lists
    assert values["train.augment"] in (False, {"shift": 2, "rotate": 10})


@pytest.mark.parametrize("text, expected", [
    ("train.lrr: {low: 0.01, high: 0.1}", "unknown key 'train.lrr'.*did you mean 'train.lr'"),
    ("lr: {low: 0.01, high: 0.1}", "did you mean 'train.lr'"),
    ("train.lr: {low: 0.5, high: 0.1}", "'train.lr' low must be below high"),
    ("train.lr: {low: 0, high: 0.1}", "'train.lr' low must be > 0"),
    ("train.momentum: {low: 0.5, high: 1.0}", "'train.momentum' high must be < 1.0"),
    ("train.epochs: {low: 1.5, high: 4}", "'train.epochs' low must be an integer"),
    ("train.epochs: {low: 1, high: 4, step: 0.5}", "step must be a positive integer"),
    ("train.epochs: {low: 1, high: 10, step: 2}", "whole number of steps"),
    ("train.lr: {low: 0.01, high: 0.1, log: true, step: 0.01}", "both log and step"),
    ("train.lr: {low: 0.01, high: 0.1, step: .nan}", "step must be a positive number, got nan"),
    ("train.lr: {low: 0.01, high: 0.1, step: .inf}", "step must be a positive number, got inf"),
    ("train.weight_decay: {low: 0, high: 1.0e+308, step: 1.0e-308}", "step 1e-308 is too small"),
    ("train.lr: {low: 0.01, high: 0.1, step: 1.0e+308}", "step 1e[+]308 is larger than the range"),
    ("seed: {low: 0, high: 100, step: 99999999999999999999}", "is larger than the range"),
    ("seed: {low: 0, high: 100, step: 1" + "0" * 400 + "}", "step 1000.* is larger than the range"),
    ("train.lr: {low: 0.01, hihg: 0.1}", "unknown field 'hihg'.*did you mean 'high'"),
    ("train.lr: 0.1", "needs a range"),
    ("model.activation: {choices: [relu, relux]}", "choice must be one of .*relux"),
    ("model.activation: {choices: []}", "non-empty list"),
    ("model.activation: {choices: [relu, relu]}", "twice"),
    ("model.hidden: {low: [1], high: [2]}", "use choices"),
    ("data.dir: {choices: [a, b]}", "'data.dir' cannot be searched"),
    ("", "names no keys"),
    ("{}", "names no keys"),
    ("[1, 2]", "expected a map"),
    ("a: *x", "not valid YAML"),
])
def test_bad_space_exits_2_naming_the_key(tmp_path, text, expected):
    import re

    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        tune.space.read_space(path)
    assert re.search(expected, str(err.value)), str(err.value)
    result = CliRunner().invoke(cli, ["tune", "--space", path])
    assert result.exit_code == 2, result.output
    assert one_error_line(result.stderr)


def test_space_file_that_is_a_fifo_or_missing_is_refused(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path, words in ((fifo, "named pipe"), (tmp_path / "nope.yaml", "not found")):
        result = CliRunner().invoke(cli, ["tune", "--space", str(path)])
        assert result.exit_code == 2 and words in result.stderr, result.output


def test_without_optuna_tune_says_how_to_install(tmp_path, files):
    code = ("import sys; sys.modules['optuna'] = None\n"
            "from bpcli.cli import main; sys.argv = ['bp', 'tune', '-c', sys.argv[1], '--space', sys.argv[2]]; main()")
    proc = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "pip install -e '.[tune]'" in one_error_line(proc.stderr)


# ---------------------------------------------------------------------------
# Exactly N: the admission rule

def test_admitted_counts_only_trials_that_are_not_failed_before_it():
    from optuna.trial import TrialState

    study = optuna.create_study()
    for state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.RUNNING):
        study.add_trial(optuna.create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                                            intermediate_values={1: 0.4} if state == TrialState.PRUNED else None))
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert tune.trials.admitted(trials, 3, 3)        # 0, 2 alive before it; 1 failed does not count
    assert not tune.trials.admitted(trials, 4, 3)    # 0, 2, 3 alive: a fourth would make 4 > 3
    c = tune.trials.counts(trials)
    assert (c["finished"], c["failed"], c["running"]) == (2, 1, 1)


# ---------------------------------------------------------------------------
# Pruning: the epoch's validation accuracy reaches the trial; a pruned run dir is whole

class FakeTrial:
    def __init__(self, prune_after):
        self.reports, self.prune_after = [], prune_after

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return len(self.reports) >= self.prune_after


def test_pruned_trial_stops_after_the_epoch_it_was_judged_on(tmp_path):
    from synthetic import tiny_mnist

    from bpcli import config, rundir
    from bpcli.train import train

    cfg = config.resolve(None, ["data.validation=100", "model.hidden=[8]", "train.epochs=4", "train.batch_size=50"])
    progress = tune.trials._progress_class()(FakeTrial(prune_after=2))
    run_dir = str(tmp_path / "trial")
    with pytest.raises(optuna.TrialPruned):
        train(cfg, tiny_mnist(), run_dir, progress=progress)
    rundir.release(run_dir)
    assert [step for step, _ in progress.trial.reports] == [1, 2]
    metrics = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    assert [m["epoch"] for m in metrics] == [1, 2]  # epoch 2 was saved before the stop
    assert os.path.exists(os.path.join(run_dir, "best.npz")) and os.path.exists(os.path.join(run_dir, "last.npz"))
    tune.trials._write_pruned(run_dir, progress, cfg)
    result = json.load(open(os.path.join(run_dir, "result.json")))
    assert result["state"] == "pruned" and result["epochs_done"] == 2 and result["epochs_planned"] == 4
    assert result["val_accuracy"] == max(v for _, v in progress.trial.reports)


def test_a_verdict_at_the_last_epoch_does_not_prune_a_finished_run(tmp_path):
    from synthetic import tiny_mnist

    from bpcli import config, rundir
    from bpcli.train import train

    cfg = config.resolve(None, ["data.validation=100", "model.hidden=[8]", "train.epochs=2", "train.batch_size=50"])
    progress = tune.trials._progress_class()(FakeTrial(prune_after=2))  # "prune" from the 2nd report on
    summary = train(cfg, tiny_mnist(), str(tmp_path / "t"), progress=progress)
    rundir.release(str(tmp_path / "t"))
    assert summary["epochs"] == 2 and progress.pruned_after is None  # the run was whole: it completes


# ---------------------------------------------------------------------------
# Whole searches

def test_search_in_process_writes_best_yaml_that_retrains(env, files, runs_root):
    config_file, space_file = files
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "3",
                                      "--seed", "1", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["counts"]["finished"] == 3 and doc["study"] == "space"
    assert doc["study_dir"] == str(runs_root / "studies" / "space")
    best = doc["best"]
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in doc["top"])
    assert 0 < best["test_accuracy"] <= 1
    assert set(best["params"]) == {"train.lr", "train.momentum"}
    for r in doc["top"]:
        assert json.load(open(os.path.join(r["run_dir"], "result.json")))["state"] == "finished"
    assert doc["retrain"] == f"bp train -c {shlex.quote(doc['best_config'])}"
    shown = CliRunner().invoke(cli, ["config", "-c", doc["best_config"]])
    assert shown.exit_code == 0, shown.output
    from bpcli.config import resolve

    flat = resolve(doc["best_config"]).flat
    assert flat["train.lr"] == best["params"]["train.lr"] and flat["model.hidden"] == [16]
    # the same command continues the study: 2 more trials, none of the first 3 run again
    again = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "5",
                                     "--json", "--quiet"])
    assert again.exit_code == 0, again.output
    trials = study_trials(tune.study.default_storage(doc["study_dir"]), "space")
    assert [t.number for t in trials] == [0, 1, 2, 3, 4] and states(trials) == ["FINISHED"] * 5


def test_trials_search_the_space_and_config_the_driver_checked(env, files, monkeypatch):
    """The files are read once: rewritten after their checks, the trials still run what was checked."""
    config_file, space_file = files
    check_corners = tune.check_corners

    def check_then_rewrite(space, base, where):
        check_corners(space, base, where)
        Path(space_file).write_text("train.lr: {low: 0, high: 1}\n")  # 0 is no learning rate
        Path(config_file).write_text("model: {hidden: [7]}\n")

    monkeypatch.setattr(tune, "check_corners", check_then_rewrite)
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "1",
                                      "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc["best"]["params"]) == {"train.lr", "train.momentum"}
    from bpcli.checkpoint import load_model

    assert load_model(os.path.join(doc["best"]["run_dir"], "best.npz")).spec.sizes == [784, 16, 10]


def test_text_output_is_a_table_of_the_best_trials(env, files):
    config_file, space_file = files
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "2", "-q"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("study space (") and "2 of 2 trials finished" in lines[0]
    header = next(line for line in lines if line.startswith("trial"))
    for column in ("val acc", "epochs", "time", "train.lr", "train.momentum", "run dir"):
        assert column in header
    assert any(line.startswith("best trial ") and "test " in line for line in lines)
    assert "retrain with: bp train -c " in lines[-1]


def test_two_worker_processes_share_the_default_storage(env, files, runs_root):
    config_file, space_file = files
    proc = bp("tune", "-c", config_file, "--space", space_file, "--trials", "4", "--workers", "2", "--json")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    trials = without_surplus(study_trials(tune.study.default_storage(doc["study_dir"]), "space"))
    assert states(trials) == ["FINISHED"] * 4, [(t.number, t.state.name, t.user_attrs) for t in trials]
    run_dirs = {t.user_attrs["run_dir"] for t in trials}
    assert len(run_dirs) == 4
    assert "2 workers" in err


def test_ctrl_c_saves_running_trials_as_interrupted_and_a_rerun_finishes(env, tmp_path, runs_root):
    # trials of 40 short epochs: Ctrl-C lands mid-trial, after the first epoch is on disk
    config_file = write(tmp_path, "long.yaml", TINY.replace("epochs: 2", "epochs: 40"))
    space_file = write(tmp_path, "space.yaml", SPACE)
    args = ("tune", "-c", config_file, "--space", space_file, "--trials", "2", "--workers", "2", "--json")
    proc = bp(*args, start_new_session=True)  # its own process group, as a terminal's job
    folder = runs_root / "studies" / "space"
    deadline = time.monotonic() + 120
    while not glob.glob(str(folder / "trial-*" / "metrics.jsonl")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C reaches the whole group
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        print(subprocess.run(["ps", "-o", "pid,ppid,stat,cmd", "-g", str(proc.pid)], capture_output=True, text=True).stdout)
        os.killpg(proc.pid, signal.SIGABRT)
        out, err = proc.communicate()
        print(err)
        raise
    assert proc.returncode == 130, err
    assert out == ""
    assert "run the same command again" in one_error_line(err)
    trials = study_trials(tune.study.default_storage(str(folder)), "space")
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert interrupted and all(t.state.name == "FAIL" for t in interrupted)
    for t in interrupted:
        if "run_dir" not in t.user_attrs:
            continue  # stopped before its run dir was made
        result = json.load(open(os.path.join(t.user_attrs["run_dir"], "result.json")))
        assert result["state"] == "interrupted"
        if result["epochs_done"]:
            assert os.path.exists(os.path.join(t.user_attrs["run_dir"], "last.npz"))
    # the trial whose first epoch was on disk was mid-training: it saved itself
    assert any(json.load(open(os.path.join(d, "result.json")))["epochs_done"] >= 1
               for d in map(os.path.dirname, glob.glob(str(folder / "trial-*" / "metrics.jsonl"))))
    proc = bp(*args)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["counts"]["finished"] == 2 and doc["counts"]["interrupted"] == len(interrupted)


def test_study_with_another_space_is_refused(env, files, tmp_path):
    config_file, space_file = files
    first = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "1",
                                     "--study", "s1", "-q"])
    assert first.exit_code == 0, first.output
    other = write(tmp_path, "other.yaml", "train.lr: {low: 0.01, high: 0.5}\n")
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", other, "--study", "s1"])
    assert result.exit_code == 2, result.output
    assert "study 's1'" in one_error_line(result.stderr) and "another search space" in result.stderr
    result = CliRunner().invoke(cli, ["tune", "--space", space_file, "--study", "s1"])
    assert result.exit_code == 2 and "another base config" in one_error_line(result.stderr), result.output


def test_bad_storage_and_study_name(files):
    _, space_file = files
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cases = [
        (["--storage", f"postgresql://bp@127.0.0.1:{port}/bp"], 1, "cannot open the study storage"),
        (["--storage", "nonsense"], 2, "not a database URL"),
        (["--storage", "foo://x/y"], 2, "not a database URL"),
        (["--study", "../escape"], 2, "not a usable name"),
    ]
    for extra, code, words in cases:
        result = CliRunner().invoke(cli, ["tune", "--space", space_file, *extra])
        assert result.exit_code == code, (extra, result.output)
        assert words in one_error_line(result.stderr), result.stderr


def test_tables_created_by_another_worker_meanwhile_are_told_from_real_errors():
    """Two workers starting on an empty PostgreSQL database both create Optuna's tables;
    the loser's CREATE fails with "relation already exists" (SQLSTATE 42P07), which
    open_storage retries (the race that test_two_machines_share_one_postgresql_study
    met once); any other database error is the user's to fix."""
    psycopg_errors = pytest.importorskip("psycopg.errors", reason="the [tune] extra's PostgreSQL driver")
    import sqlalchemy.exc

    def error(kind, orig):
        return kind("CREATE TABLE studies (...)", {}, orig)

    assert tune.study.created_meanwhile(error(sqlalchemy.exc.ProgrammingError,
                                        psycopg_errors.DuplicateTable('relation "studies" already exists')))
    assert tune.study.created_meanwhile(error(sqlalchemy.exc.IntegrityError, Exception("UNIQUE constraint failed")))
    assert not tune.study.created_meanwhile(error(sqlalchemy.exc.ProgrammingError,
                                            psycopg_errors.InsufficientPrivilege("permission denied")))
    assert not tune.study.created_meanwhile(error(sqlalchemy.exc.OperationalError, Exception("connection refused")))


def test_storage_password_never_printed(files):
    _, space_file = files
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(cli, ["tune", "--space", space_file, "--storage",
                                      f"postgresql://bp:s3cret@127.0.0.1:{port}/bp"])
    assert result.exit_code == 1 and "s3cret" not in result.output, result.output


# ---------------------------------------------------------------------------
# Many machines: a real PostgreSQL server, started for this module

def _pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1: its URL, and stop/start for a test of a
    database that goes away mid-study."""

    def __init__(self, bindir, as_postgres, root, port):
        self.bindir, self.as_postgres, self.root, self.port = bindir, as_postgres, root, port
        self.data = os.path.join(root, "data")
        self.url = f"postgresql://postgres@127.0.0.1:{port}/bp"

    def run(self, *cmd):
        proc = subprocess.run([*self.as_postgres, os.path.join(self.bindir, cmd[0]), *cmd[1:]],
                              capture_output=True, text=True, cwd=self.root, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def start(self):
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w", "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self, mode="fast"):
        self.run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")


@pytest.fixture(scope="module")
def postgres_server():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (initdb into a temp dir, pg_ctl start);
    stopped and removed at the end. Installs Debian's postgresql when apt can; skips only
    where neither the server nor apt is there, and never in CI."""
    bindir = _pg_bin()
    if bindir is None and shutil.which("apt-get") and os.geteuid() == 0:
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=apt_env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], env=apt_env, capture_output=True)
        bindir = _pg_bin()
    if bindir is None:
        reason = "PostgreSQL server binaries not found and apt cannot install them (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = tempfile.mkdtemp(prefix="bp-pg-")
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")  # initdb refuses to run as root
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Postgres(bindir, as_postgres, root, port)
    server.run("initdb", "-D", server.data, "-U", "postgres", "-A", "trust", "--no-sync")
    server.start()
    try:
        server.run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "bp")
        yield server
    finally:
        subprocess.run([*as_postgres, os.path.join(bindir, "pg_ctl"), "-D", server.data, "-m", "immediate", "-w",
                        "stop"], capture_output=True, cwd=root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres(postgres_server):
    """The running server's URL."""
    return postgres_server.url


def machine(tmp_path, name, **extra):
    """The environment of one "machine": its own runs root (trial run dirs, study folder)."""
    return {**os.environ, "BP_RUNS_DIR": str(tmp_path / name), **extra}


def test_two_machines_share_one_postgresql_study(env, files, postgres, tmp_path):
    config_file, space_file = files
    # trials of ~0.5 s: the machine started first cannot finish all six before the other starts
    args = ("tune", "-c", config_file, "--set", "train.epochs=40", "--space", space_file, "--trials", "6",
            "--storage", postgres, "--study", "shared", "--json")
    procs = [bp(*args, env=machine(tmp_path, name)) for name in ("a", "b")]
    docs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        docs.append(json.loads(out))
    trials = without_surplus(study_trials(postgres, "shared"))
    assert states(trials) == ["FINISHED"] * 6, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert len({t.number for t in trials}) == 6  # none duplicated
    dirs = [t.user_attrs["run_dir"] for t in trials]
    assert len(set(dirs)) == 6
    assert {d.split(os.sep)[len(str(tmp_path).split(os.sep))] for d in dirs} == {"a", "b"}  # both worked
    assert docs[0]["best"]["number"] == docs[1]["best"]["number"]
    assert "postgresql://postgres@127.0.0.1" in docs[0]["storage"]


def test_a_machine_killed_with_kill_9_does_not_lose_the_study(env, tmp_path, postgres):
    config_file = write(tmp_path, "long.yaml", TINY.replace("epochs: 2", "epochs: 30"))
    space_file = write(tmp_path, "space.yaml", SPACE)
    args = ("tune", "-c", config_file, "--space", space_file, "--trials", "3", "--storage", postgres,
            "--study", "killed", "--json")
    heartbeat = {"BP_TUNE_HEARTBEAT": "1"}
    victim = bp(*args, env=machine(tmp_path, "victim", **heartbeat))
    deadline = time.monotonic() + 120
    while not glob.glob(str(tmp_path / "victim" / "studies" / "killed" / "trial-*" / "metrics.jsonl")):
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()
        time.sleep(0.05)
    survivor = bp(*args, env=machine(tmp_path, "survivor", **heartbeat))
    victim.kill()  # SIGKILL mid-trial: no clean-up at all
    victim.communicate()
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    assert json.loads(out)["counts"]["finished"] == 3
    trials = study_trials(postgres, "killed")
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    stale = [t for t in trials if t.state.name == "FAIL"]
    assert len(stale) == 1 and "victim" in stale[0].user_attrs["run_dir"]
    retried = [t for t in finished if t.system_attrs.get("failed_trial") == stale[0].number]
    assert len(retried) == 1 and retried[0].params == stale[0].params


def test_trials_never_move_latest_and_the_study_names_its_best(env, files, runs_root):
    """runs/latest is the user's own model: after a search it still is, and the study's best
    model is a link in the study folder that bp evaluate takes as printed."""
    import shlex

    from bpcli import rundir

    mine = runs_root / "mine"
    mine.mkdir(parents=True)
    rundir.point_latest(str(mine))
    config_file, space_file = files
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert os.path.realpath(runs_root / "latest") == str(mine)
    study = runs_root / "studies" / "space"
    best_line = next(line for line in result.stdout.splitlines() if line.startswith("best model "))
    command = shlex.split(best_line.split("evaluate it with: ")[1])
    assert command[:2] == ["bp", "evaluate"] and os.path.realpath(command[2]) == os.path.realpath(study / "best")
    trial = os.path.realpath(study / "best")
    assert os.path.basename(trial).startswith("trial-") and os.path.isfile(os.path.join(trial, "best.npz"))
    scored = CliRunner().invoke(cli, [*command[1:], "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["checkpoint"].startswith(str(study / "best"))


# ---------------------------------------------------------------------------
# Hostile input and hostile events: each a class of failure, each with its own tests

def own(*args, **kw):
    """A bp process in a session of its own (a terminal's job): the test owns its whole group."""
    return bp(*args, start_new_session=True, **kw)


def finish(proc, timeout=120):
    """The process's (stdout, stderr) once it ends; on timeout its whole group is killed."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"bp did not end within {timeout}s:\n{err[-3000:]}")


def wait_until(condition, proc=None, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(proc.communicate())
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def fail_on_timeout(proc):
    """Kill the group if the test failed with it still running."""
    if proc.poll() is None or group_alive(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def no_trial_in(folder):
    return not glob.glob(str(Path(folder) / "trial-*"))


# Writing where the user did not ask ------------------------------------------

@pytest.mark.parametrize("name", ["w/e?f", "a%41b", "x#y", "with space", "ünï/códe", "q?a=1&b=2#frag%"])
def test_the_default_storage_url_names_the_study_folders_file_whatever_its_path(tmp_path, name):
    from sqlalchemy.engine import make_url

    folder = tmp_path / name / "studies" / "s"
    assert make_url(tune.study.default_storage(str(folder))).database == str(folder / "study.db")


def test_a_runs_root_with_a_question_mark_keeps_the_study_in_its_folder(env, files, tmp_path, monkeypatch):
    config_file, space_file = files
    root = tmp_path / "w" / "e?f %41"
    monkeypatch.setenv("BP_RUNS_DIR", str(root))
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "1", "-q"])
    assert result.exit_code == 0, result.output
    assert (root / "studies" / "space" / "study.db").is_file()
    assert sorted(os.listdir(tmp_path / "w")) == ["e?f %41"]  # no stray w/e SQLite file beside it


def test_a_study_that_bp_did_not_create_is_refused_and_left_untouched(env, files, tmp_path):
    config_file, space_file = files
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    theirs = optuna.create_study(study_name="theirs", storage=url)  # another user's, minimizing
    for x in (1.0, 2.0, 3.0):
        theirs.add_trial(optuna.create_trial(params={"x": x}, distributions={
            "x": optuna.distributions.FloatDistribution(0, 5)}, value=x))
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "2",
                                      "--storage", url, "--study", "theirs"])
    assert result.exit_code == 2, result.output
    assert "not created by bp tune" in one_error_line(result.stderr)
    again = optuna.load_study(study_name="theirs", storage=url)
    assert again.user_attrs == {} and len(again.trials) == 3
    assert no_trial_in(Path(os.environ["BP_RUNS_DIR"]) / "studies" / "theirs")
    assert not (Path(os.environ["BP_RUNS_DIR"]) / "studies" / "theirs" / "best.yaml").exists()


# Secrets ---------------------------------------------------------------------

SECRET = "pw-Xy7"
URL_FORMS = [
    "postgresql://u:{s}@127.0.0.1:{port}/db",
    "postgresql://u@127.0.0.1:{port}/db?password={s}",
    "postgresql:///db?host=127.0.0.1&port={port}&password={s}",
    "postgresql:///db?host=127.0.0.1&port={port}&sslpassword={s}",
    "u:{s}@127.0.0.1:{port}/db",
    "postgresql://u:{s}@x@127.0.0.1:{port}/db",
    "postgresql://u:{s}/x?y#z@127.0.0.1:{port}/db",
    "postgresql://u:{s}%40x@127.0.0.1:{port}/db",
    "host=127.0.0.1 port={port} password={s}",
]


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("form", URL_FORMS)
def test_a_storage_password_is_masked_in_every_form(form):
    url = form.format(s=SECRET, port=5432)
    shown_ = tune.study.shown_url(url)
    assert SECRET not in shown_ and "x@127" not in shown_ and "***" in shown_, shown_


@pytest.mark.parametrize("form", URL_FORMS)
def test_a_storage_password_never_reaches_an_error_message(files, form):
    _, space_file = files
    url = form.format(s=SECRET, port=closed_port())
    result = CliRunner().invoke(cli, ["tune", "--space", space_file, "--storage", url])
    assert result.exit_code in (1, 2), result.output
    line = one_error_line(result.stderr)
    assert SECRET not in result.output and "x@127" not in line, line
    assert SECRET[1:] not in result.output and SECRET[:-1] not in result.output


def test_a_storage_password_is_masked_in_notes_and_json(env, files, postgres):
    config_file, space_file = files
    for url in (postgres.replace("postgres@", f"postgres:{SECRET}@"), postgres + f"?password={SECRET}"):
        result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "1",
                                          "--storage", url, "--study", "masked", "--json"])
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
        assert "***" in json.loads(result.stdout)["storage"] and "***" in result.stderr


def test_a_failed_study_storage_says_so_without_the_password(env, files, postgres_server, tmp_path):
    """A database that refuses mid-way: the message is the driver's, the password masked."""
    config_file, space_file = files
    url = postgres_server.url.replace("postgres@", f"postgres:{SECRET}@").replace("/bp", "/nodb")
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--storage", url])
    assert result.exit_code == 1 and "nodb" in one_error_line(result.stderr), result.output
    assert SECRET not in result.output


# Never ending, never stopping -------------------------------------------------

DIVERGES = "train.lr: {low: 1.0e+200, high: 1.0e+300, log: true}\n"


def test_a_space_whose_every_trial_diverges_ends_with_an_error(env, files, tmp_path, runs_root):
    config_file, _ = files
    space_file = write(tmp_path, "diverges.yaml", DIVERGES)
    proc = own("tune", "-c", config_file, "--space", space_file, "--trials", "3")
    try:
        out, err = finish(proc)
    finally:
        fail_on_timeout(proc)
    assert proc.returncode == 1, err
    line = one_error_line(err)
    assert f"{tune.trials.FAILURES_IN_A_ROW} trials failed" in line and "diverged" in line and "--study" in line
    trials = glob.glob(str(runs_root / "studies" / "diverges" / "trial-*"))
    assert len(trials) == tune.trials.FAILURES_IN_A_ROW
    again = own("tune", "-c", config_file, "--space", space_file, "--trials", "3")  # a rerun adds none
    try:
        finish(again)
    finally:
        fail_on_timeout(again)
    assert again.returncode == 1 and len(glob.glob(str(runs_root / "studies" / "diverges" / "trial-*"))) == 10


def test_failures_in_all_end_a_study_even_between_successes():
    from optuna.trial import TrialState

    study = optuna.create_study()
    for i in range(12):
        ok = i % 2 == 0
        study.add_trial(optuna.create_trial(state=TrialState.COMPLETE if ok else TrialState.FAIL,
                                            value=0.5 if ok else None))
    trials = study.get_trials(deepcopy=False)
    assert tune.trials.too_many_failures(trials, 20) is None           # 6 failed: under 10 and under 2 * 20
    assert tune.trials.too_many_failures(trials, 3) is None            # 6 failed: under the floor of 10
    for _ in range(4):
        study.add_trial(optuna.create_trial(state=TrialState.FAIL))
    assert "10 trials failed" in tune.trials.too_many_failures(study.get_trials(deepcopy=False), 3)
    assert tune.trials.too_many_failures(study.get_trials(deepcopy=False), 20) is None


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_every_signal_stops_a_search_of_diverging_trials(env, files, tmp_path, runs_root, signum):
    """Trials that diverge in a tenth of a second: the signal lands as one diverges, and a
    signal train took but did not act on must still stop the search."""
    config_file, _ = files
    space_file = write(tmp_path, "diverges.yaml", DIVERGES)
    proc = own("tune", "-c", config_file, "--space", space_file, "--trials", "3")
    try:
        folder = runs_root / "studies" / "diverges"
        wait_until(lambda: glob.glob(str(folder / "trial-0000")), proc)
        os.kill(proc.pid, signum)
        out, err = finish(proc, timeout=60)
    finally:
        fail_on_timeout(proc)
    assert proc.returncode == 130, err
    assert "interrupted" in one_error_line(err)
    assert len(glob.glob(str(folder / "trial-*"))) < tune.trials.FAILURES_IN_A_ROW


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_training_trial_like_ctrl_c(env, tmp_path, runs_root, signum):
    config_file = write(tmp_path, "long.yaml", TINY.replace("epochs: 2", "epochs: 400"))
    space_file = write(tmp_path, "space.yaml", SPACE)
    proc = own("tune", "-c", config_file, "--space", space_file, "--trials", "2")
    try:
        folder = runs_root / "studies" / "space"
        wait_until(lambda: glob.glob(str(folder / "trial-*" / "metrics.jsonl")), proc)
        os.kill(proc.pid, signum)
        out, err = finish(proc, timeout=60)
    finally:
        fail_on_timeout(proc)
    assert proc.returncode == 130, err
    result = json.loads(next(folder.glob("trial-*/result.json")).read_text())
    assert result["state"] == "interrupted" and result["epochs_done"] < 400


def test_more_workers_than_cpus_is_a_usage_error(files):
    _, space_file = files
    cpus = len(os.sched_getaffinity(0))
    result = CliRunner().invoke(cli, ["tune", "--space", space_file, "--workers", str(cpus + 1)])
    assert result.exit_code == 2 and f"at most --workers {cpus}" in one_error_line(result.stderr), result.output


def test_workers_die_with_a_parent_killed_by_kill_9_and_a_rerun_runs_n(env, tmp_path, runs_root):
    config_file = write(tmp_path, "long.yaml", TINY.replace("epochs: 2", "epochs: 400"))
    space_file = write(tmp_path, "space.yaml", SPACE)
    args = ("tune", "-c", config_file, "--space", space_file, "--trials", "2", "--workers", "2", "--json")
    proc = own(*args)
    folder = runs_root / "studies" / "space"
    try:
        wait_until(lambda: len(glob.glob(str(folder / "trial-*" / "metrics.jsonl"))) == 2, proc)
        proc.kill()  # the parent only: its workers are not told
        proc.communicate()
        wait_until(lambda: not group_alive(proc.pid), timeout=60)  # the workers followed it
    finally:
        fail_on_timeout(proc)
    trials = study_trials(tune.study.default_storage(str(folder)), "space")
    assert all(t.state.name == "FAIL" and t.user_attrs.get("interrupted") for t in trials), \
        [(t.number, t.state.name, t.user_attrs) for t in trials]
    rerun = own(*args, env={**os.environ, "BP_TUNE_HEARTBEAT": "1"})
    try:
        wait_until(lambda: len(glob.glob(str(folder / "trial-*" / "metrics.jsonl"))) == 4, rerun)
        running = [t for t in study_trials(tune.study.default_storage(str(folder)), "space") if t.state.name == "RUNNING"]
        assert len(running) == 2  # two workers, not four
        os.killpg(rerun.pid, signal.SIGINT)
        finish(rerun, timeout=60)
        assert rerun.returncode == 130
        wait_until(lambda: not group_alive(rerun.pid), timeout=30)  # multiprocessing's helpers too
    finally:
        fail_on_timeout(rerun)


def test_sighup_to_the_parent_stops_every_worker(env, tmp_path, runs_root):
    config_file = write(tmp_path, "long.yaml", TINY.replace("epochs: 2", "epochs: 400"))
    space_file = write(tmp_path, "space.yaml", SPACE)
    proc = own("tune", "-c", config_file, "--space", space_file, "--trials", "2", "--workers", "2")
    folder = runs_root / "studies" / "space"
    try:
        wait_until(lambda: len(glob.glob(str(folder / "trial-*" / "metrics.jsonl"))) == 2, proc)
        os.kill(proc.pid, signal.SIGHUP)
        out, err = finish(proc, timeout=60)
        wait_until(lambda: not group_alive(proc.pid), timeout=30)
    finally:
        fail_on_timeout(proc)
    assert proc.returncode == 130, err
    for result in folder.glob("trial-*/result.json"):
        assert json.loads(result.read_text())["state"] == "interrupted"


def test_a_lost_database_is_one_line_and_its_trial_is_failed_on_the_next_run(env, tmp_path, postgres_server):
    config_file = write(tmp_path, "long.yaml", TINY.replace("epochs: 2", "epochs: 60"))
    space_file = write(tmp_path, "space.yaml", SPACE)
    args = ("tune", "-c", config_file, "--space", space_file, "--trials", "1", "--storage", postgres_server.url,
            "--study", "lost", "--json")
    heartbeat = {"BP_TUNE_HEARTBEAT": "1"}
    proc = own(*args, env=machine(tmp_path, "m", **heartbeat))
    try:
        wait_until(lambda: glob.glob(str(tmp_path / "m" / "studies" / "lost" / "trial-*" / "metrics.jsonl")), proc)
        postgres_server.stop()
        try:
            out, err = finish(proc, timeout=60)
        finally:
            postgres_server.start()
    finally:
        fail_on_timeout(proc)
    assert proc.returncode == 1, err
    assert "lost the study storage" in one_error_line(err) and out == ""
    assert [t.state.name for t in study_trials(postgres_server.url, "lost")] == ["RUNNING"]
    rerun = own(*args, env=machine(tmp_path, "m", **heartbeat))
    try:
        out, err = finish(rerun, timeout=300)
    finally:
        fail_on_timeout(rerun)
    assert rerun.returncode == 0, err
    trials = study_trials(postgres_server.url, "lost")
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] or \
        [t.state.name for t in trials] == ["FAIL", "PRUNED"]
    assert trials[1].system_attrs.get("failed_trial") == 0  # the lost trial, run again


# Tracebacks where a line belongs ---------------------------------------------

@pytest.mark.parametrize("space", [
    "train.lr: {low: 0.01, high: 0.5, step: 1.0e-300}\n",
    "train.label_smoothing: {low: 0.0, high: 0.1, step: 1.0e-100}\n",
])
def test_a_step_optuna_cannot_search_is_refused_before_any_trial(env, files, tmp_path, runs_root, space):
    config_file, _ = files
    space_file = write(tmp_path, "tinystep.yaml", space)
    for _ in range(2):
        result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "1"])
        assert result.exit_code == 2, result.output
        assert "Optuna cannot search" in one_error_line(result.stderr)
    assert not (runs_root / "studies" / "tinystep" / "study.db").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///", "sqlite+pysqlite:///:memory:",
                                 "sqlite:///file::memory:?uri=true"])
def test_a_storage_in_memory_is_refused(files, url):
    _, space_file = files
    result = CliRunner().invoke(cli, ["tune", "--space", space_file, "--storage", url])
    assert result.exit_code == 2 and "in memory" in one_error_line(result.stderr), result.output


def test_a_study_db_of_another_optuna_schema_is_one_line(env, files, runs_root):
    import sqlite3

    config_file, space_file = files
    first = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "1", "-q"])
    assert first.exit_code == 0, first.output
    db = runs_root / "studies" / "space" / "study.db"
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("UPDATE alembic_version SET version_num = 'v1.3.0.a'")
        con.commit()
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "2"])
    assert result.exit_code == 1, result.output
    assert "optuna storage upgrade" in one_error_line(result.stderr)


@pytest.mark.parametrize("value", ["²", "1e20", "100000000000000000000", "0", "-1", "3601", " 5", "٣"])
def test_a_bad_heartbeat_setting_is_a_usage_error(files, monkeypatch, value):
    _, space_file = files
    monkeypatch.setenv("BP_TUNE_HEARTBEAT", value)
    result = CliRunner().invoke(cli, ["tune", "--space", space_file])
    assert result.exit_code == 2 and "BP_TUNE_HEARTBEAT" in one_error_line(result.stderr), result.output


@pytest.mark.parametrize("name", ["s\n", "s\r", "s\n\n", "\ns"])
def test_a_study_name_with_a_newline_is_refused(files, name):
    _, space_file = files
    result = CliRunner().invoke(cli, ["tune", "--space", space_file, "--study", name])
    assert result.exit_code == 2 and "not a usable name" in one_error_line(result.stderr), result.output


@pytest.mark.parametrize("space, words", [
    ("data.validation: {choices: [100, 5000]}\n", "data.validation"),
    ("data.limit: {low: 150, high: 2000}\n", "data.validation"),
    ("model.hidden: {choices: [[16], [60000, 60000, 60000]]}\n", "parameters"),
    ("train.batch_size: {low: 50, high: 60000}\nmodel.hidden: {choices: [[16], [100000, 100000]]}\n", "GiB"),
])
def test_rules_between_keys_are_checked_before_any_trial(env, files, tmp_path, runs_root, space, words):
    config_file, _ = files  # data.limit 1000, data.validation 200
    space_file = write(tmp_path, "cross.yaml", space)
    result = CliRunner().invoke(cli, ["tune", "-c", config_file, "--space", space_file, "--trials", "3"])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert words in line and "space file" in line, line
    assert not (runs_root / "studies" / "cross").exists()
