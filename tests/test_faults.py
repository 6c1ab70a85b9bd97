"""Faults a user's machine deals out: kill -9 mid-download, a file-size limit (a full disk)
while downloading and while checkpointing. Each must end cleanly with nothing corrupt left.

Python ignores SIGXFSZ, so a write past ``ulimit -f`` fails with EFBIG, exactly as a
full disk fails with ENOSPC: both are an OSError on write.
"""

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpcli.download import MNIST_FILES, cache_problem

REPO = Path(__file__).resolve().parents[1]
NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]


def bp(args, env=None, file_limit=None, **kw):
    def limit():
        if file_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.Popen([sys.executable, "-m", "bpcli.cli", *args], cwd=REPO,
                            env={**os.environ, "BP_OFFLINE": "", **(env or {})}, preexec_fn=limit,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def leftovers(folder):
    return [p.name for p in Path(folder).iterdir() if ".part" in p.name]


def test_kill_9_during_a_download_then_the_next_download_completes(tmp_path, real_mnist_dir, make_server):
    server = make_server()
    server.add_dir(real_mnist_dir)
    server.behaviour["/train-images-idx3-ubyte.gz"] = ["trickle", "ok"]
    data = tmp_path / "data"
    proc = bp(["download", "--mirror", server.url, "--data-dir", str(data)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until half of the biggest file is on disk
        parts = [p for p in data.glob("*.part")] if data.exists() else []
        if parts and parts[0].stat().st_size > 10_000_000:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the download never got going")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert not (data / "train-images-idx3-ubyte").exists()  # nothing half-written under a final name

    again = bp(["download", "--mirror", server.url, "--data-dir", str(data)])
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith(".")) == sorted(NAMES)
    assert leftovers(data) == []


@pytest.mark.parametrize("limit", [1_000_000, 20_000_000])
def test_file_size_limit_while_downloading(tmp_path, real_mnist_dir, limit):
    data = tmp_path / "data"
    proc = bp(["download", "--mirror", str(real_mnist_dir), "--data-dir", str(data)], file_limit=limit)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "Traceback" not in err
    assert leftovers(data) == []
    for name in NAMES:  # whatever is there under a final name is complete and verified
        if (data / name).exists():
            assert cache_problem(data / name, MNIST_FILES[name]) is None, name


def test_file_size_limit_while_checkpointing(tmp_path, real_mnist_dir):
    data = tmp_path / "data"
    ok = bp(["download", "--mirror", str(real_mnist_dir), "--data-dir", str(data)])
    assert ok.wait(timeout=120) == 0
    run = tmp_path / "run"
    # config.yaml fits in 20 kB, a checkpoint of 784-64-10 (~200 kB) does not
    proc = bp(["train", "-c", "configs/smoke.yaml", "--data-dir", str(data), "--run-dir", str(run), "--quiet"],
              file_limit=20_000)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert err.strip().startswith("Error: cannot write") and "last.npz" in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml", "result.json"]
    import json

    assert json.loads((run / "result.json").read_text())["state"] == "failed"  # and says so
