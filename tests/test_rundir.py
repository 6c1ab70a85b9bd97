"""Run dirs on a shared machine: exclusive names, one trainer per run dir, --force that
deletes nothing in use or out of bounds, and runs/latest in the runs root."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bpcli import rundir
from bpcli.errors import ConfigError
from bpcli.rundir import RunInUse

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "smoke.yaml")


def bp(*args, env=None, **kw):
    """A real bp process (its own locks: flock is per open file, so another process is needed)."""
    return subprocess.run([sys.executable, "-m", "bpcli.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300, **kw)


def offline_env(tmp_path):
    return {"BP_OFFLINE": "1", "BP_DATA_DIR": str(tmp_path / "no-data")}


def a_finished_run(folder):
    folder.mkdir(parents=True)
    for name in ("config.yaml", "last.npz", "best.npz", "metrics.jsonl"):
        (folder / name).write_text(f"precious {name}")
    return folder


def untouched(folder):
    return all((folder / n).read_text() == f"precious {n}"
               for n in ("config.yaml", "last.npz", "best.npz", "metrics.jsonl"))


@pytest.fixture
def held(tmp_path):
    """A run dir that this test process holds, as a running bp train would."""
    folder = a_finished_run(tmp_path / "busy")
    rundir.lock(folder)
    yield folder
    rundir.release(folder)


def test_a_second_trainer_on_a_run_dir_in_use_exits_1_naming_the_holder(held, tmp_path):
    result = bp("train", "--run-dir", str(held), "--force", "-c", SMOKE, env=offline_env(tmp_path))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("Error: run dir") and f"pid {os.getpid()}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert untouched(held)  # --force never deletes a run in use


def test_resume_of_a_run_still_training_is_refused(held, tmp_path):
    result = bp("train", "--resume", str(held), env=offline_env(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "in use by another bp train" in result.stderr and f"pid {os.getpid()}" in result.stderr
    assert untouched(held)


def test_the_lock_goes_with_the_process_that_held_it(tmp_path):
    folder = a_finished_run(tmp_path / "r")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from bpcli import rundir; "
                               f"rundir.lock({str(folder)!r}); print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunInUse, match=f"pid {holder.pid}"):
            rundir.lock(folder)
    finally:
        holder.kill()  # kill -9: no clean-up code runs, the kernel drops the lock
        holder.wait()
    rundir.lock(folder)
    rundir.release(folder)


def test_default_run_dirs_are_unique_even_within_one_second(monkeypatch):
    class Frozen:  # every thread asks for its name in the same second
        @staticmethod
        def now():
            from datetime import datetime
            return datetime(2026, 1, 1, 12, 0, 0)

    monkeypatch.setattr(rundir, "datetime", Frozen)
    barrier, made = threading.Barrier(16), []

    def make():
        barrier.wait()
        made.append(rundir.create())

    threads = [threading.Thread(target=make) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 16
    assert sorted(os.path.basename(d) for d in made)[0] == "20260101-120000"


def test_parallel_default_trainings_get_a_run_dir_each(mnist_data_dir, runs_root):
    env = {**os.environ, "BP_DATA_DIR": str(mnist_data_dir), "BP_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "bpcli.cli", "train", "-c", SMOKE, "--epochs", "1",
                               "--quiet", "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    import json
    dirs = {json.loads(out)["run_dir"] for out, _ in outs}
    assert len(dirs) == 4
    for d in dirs:
        assert json.loads((Path(d) / "result.json").read_text())["state"] == "finished"


def test_two_trainers_started_at_once_on_one_run_dir(mnist_data_dir, tmp_path):
    """Exactly one trains; the other is refused (in use, or already holding a run), and the
    run dir holds one run's files, not a mix of both."""
    run = tmp_path / "R"
    env = {**os.environ, "BP_DATA_DIR": str(mnist_data_dir), "BP_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "bpcli.cli", "train", "-c", SMOKE, "--epochs", "2",
                               "--seed", str(seed), "--run-dir", str(run), "--quiet"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] in (1, 2), outs
    loser = outs[[p.returncode for p in procs].index(codes[1])][1]
    assert "in use by another bp train" in loser or "already holds a run" in loser
    from bpcli.checkpoint import read_checkpoint
    import yaml
    seed = yaml.safe_load((run / "config.yaml").read_text())["seed"]
    for name in ("last.npz", "best.npz"):
        assert read_checkpoint(run / name)[1]["config"]["seed"] == seed


def test_force_never_deletes_through_the_latest_link(tmp_path, runs_root):
    previous = a_finished_run(runs_root / "good")
    os.symlink("good", runs_root / "latest")
    result = bp("train", "--run-dir", str(runs_root / "latest"), "--force", "-c", SMOKE,
                env=offline_env(tmp_path))
    assert result.returncode == 2 and "symbolic link" in result.stderr, result.stderr
    assert untouched(previous) and os.readlink(runs_root / "latest") == "good"


def test_force_deletes_only_bps_files_inside_the_run_dir(tmp_path):
    outside = tmp_path / "outside.npz"
    outside.write_text("not bp's")
    run = a_finished_run(tmp_path / "r")
    (run / "best.npz").unlink()
    os.symlink(outside, run / "best.npz")
    (run / "notes.txt").write_text("mine")
    rundir.create(str(run), force=True)
    rundir.release(run)
    assert outside.read_text() == "not bp's" and (run / "notes.txt").read_text() == "mine"
    assert not any((run / n).exists() for n in ("config.yaml", "last.npz", "metrics.jsonl"))


def test_an_existing_run_is_refused_without_force(tmp_path):
    run = a_finished_run(tmp_path / "r")
    with pytest.raises(ConfigError, match="--resume"):
        rundir.create(str(run))
    assert untouched(run)


def test_latest_lives_in_the_runs_root_whatever_run_dir_says(tmp_path, runs_root):
    elsewhere = tmp_path / "exp" / "foo"
    elsewhere.mkdir(parents=True)
    rundir.point_latest(str(elsewhere))
    assert not (tmp_path / "exp" / "latest").exists()
    assert (runs_root / "latest").resolve() == elsewhere.resolve()
    inside = runs_root / "20260101-000000"
    inside.mkdir()
    rundir.point_latest(str(inside))
    assert os.readlink(runs_root / "latest") == "20260101-000000"  # relative: the root can move


def test_a_real_folder_named_latest_is_not_replaced(runs_root, tmp_path):
    (runs_root / "latest").mkdir(parents=True)
    (runs_root / "latest" / "mine").write_text("x")
    rundir.point_latest(str(tmp_path))
    assert (runs_root / "latest" / "mine").read_text() == "x"


# --- found on review: links, planted files, a lock looked at for a moment ----------

def test_resume_through_latest_resumes_the_run_it_points_at(tmp_path, runs_root):
    from bpcli import train as train_mod
    from bpcli.config import resolve
    from synthetic import tiny_mnist

    data = tiny_mnist(n_train=300, n_test=50)
    cfg = resolve(None, ["data.validation=50", "model.hidden=[8]", "train.epochs=1", "train.augment=false"])
    run = runs_root / "r1"
    train_mod.train(cfg, data, str(run))
    run_dir, ckpt = rundir.locate_resume(str(runs_root / "latest"))
    assert run_dir == str(run.resolve()) and ckpt == str(run.resolve() / "last.npz")
    train_mod.train(train_mod.resume_config(ckpt, {"train.epochs": 2}), data, run_dir, resume_from=ckpt)
    assert os.readlink(runs_root / "latest") == "r1"  # never a link to itself
    rundir.point_latest(str(runs_root / "latest"))
    assert os.readlink(runs_root / "latest") == "r1"


def test_force_through_latest_with_a_trailing_slash_is_refused(tmp_path, runs_root):
    previous = a_finished_run(runs_root / "good")
    os.symlink("good", runs_root / "latest")
    result = bp("train", "--run-dir", str(runs_root / "latest") + "/", "--force", "-c", SMOKE,
                env=offline_env(tmp_path))
    assert result.returncode == 2 and "symbolic link" in result.stderr, result.stderr
    assert untouched(previous)


def test_a_planted_lock_link_is_never_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = a_finished_run(tmp_path / "run")
    os.symlink(victim, run / ".lock")
    with pytest.raises(Exception, match="symbolic link, not bp's lock file"):
        rundir.lock(run)
    assert victim.read_text() == "precious"


def test_a_fifo_lock_neither_hangs_runs_nor_trains(tmp_path, runs_root):
    run = a_finished_run(runs_root / "x")
    os.mkfifo(run / ".lock")
    listed = bp("runs", "--json")  # (under bp()'s timeout: a blocked open would hang here)
    assert listed.returncode == 0 and '"name": "x"' in listed.stdout
    result = bp("train", "--resume", str(run), env=offline_env(tmp_path))
    assert result.returncode == 1 and "named pipe" in result.stderr and "lock file" in result.stderr


def test_a_fifo_result_json_does_not_hang_a_resume(tmp_path):
    run = a_finished_run(tmp_path / "r")
    os.mkfifo(run / "result.json")
    result = bp("train", "--resume", str(run), env=offline_env(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr  # and it returned


def test_a_glance_at_the_lock_does_not_refuse_a_starting_trainer(tmp_path):
    """bp runs takes a shared lock for a moment: lock() waits that moment out."""
    import fcntl

    run = a_finished_run(tmp_path / "r")
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)
    threading.Timer(0.1, os.close, [fd]).start()
    rundir.lock(run)  # would raise RunInUse without the short patience
    rundir.release(run)


def test_a_folder_of_another_programs_config_is_never_taken_over(tmp_path):
    mine = tmp_path / "app"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: app config\n")
    for force in ([], ["--force"]):
        result = bp("train", "-c", SMOKE, "--run-dir", str(mine), *force, env=offline_env(tmp_path))
        assert result.returncode == 2 and "bp did not write" in result.stderr, result.stderr
    assert (mine / "config.yaml").read_text() == "my: app config\n"


def test_a_second_trainer_without_force_is_told_the_run_is_in_use_and_nothing_else(held, tmp_path):
    """Neither --resume nor --force could take a run dir another process trains in: the
    error says it is in use (exit 1) and names the process, suggesting no command that fails."""
    result = bp("train", "--run-dir", str(held), "-c", SMOKE, env=offline_env(tmp_path))
    assert result.returncode == 1, result.stderr
    assert "in use by another bp train" in result.stderr and f"pid {os.getpid()}" in result.stderr
    assert "--resume" not in result.stderr and "--force" not in result.stderr
    assert untouched(held)
