#!/usr/bin/env python3
"""bp's speed benchmark, side by side with a PyTorch CPU peer.

    python benchmarks/run.py [--repeats N] [--quick] [--skip-torch]
                             [--markdown FILE] [--json FILE] [--data-dir DIR]

Measures, through the ``bp`` command line only (never bp's internals, except
the one in-process forward-pass timing that imports ``bpcli.checkpoint`` and
``bpcli.metrics``):

* training throughput (samples/s = training examples / median epoch time,
  evaluation excluded) over 5 epochs for three networks, a, b and c (see
  ``CONFIGS``), for bp and ``../shared/bench/torch_peer.py``; test accuracy
  after those 5 epochs beside it; and ``configs/default.yaml`` (bp only);
* network a again with two threads (no pinning);
* time to >= 97.0 % test accuracy for network a (cumulative training seconds);
* the wall time of whole commands: ``bp train`` (a, 5 epochs),
  ``bp evaluate CKPT --json``, ``bp --help``, ``bp predict one.png``, and the
  in-process forward pass over the 10,000 test images;
* peak RSS and wall time of a full ``bp train -c configs/default.yaml``.

Everything except the two-thread rows runs pinned to one core
(``taskset -c 0``) with one thread. Each figure is a median over
``--repeats`` runs (default 3; bp and torch runs interleaved), or over the
count the row states. Wall times and peak RSS are measured by a small
stdlib wrapper process (``resource.getrusage(RUSAGE_CHILDREN)``) around the
command, so the wrapper's own start-up is not counted.

The torch peer lives in its own venv (default ``.torch-venv`` in the repo):

    python3 -m venv .torch-venv && .torch-venv/bin/pip install torch==2.13.0 numpy

Without it, torch columns are skipped (``--skip-torch`` does it on purpose).
MNIST comes from a local copy of the gzipped files (``--mnist``, else
``$BP_TEST_MNIST``, ``/work/shared/mnist``, ``../shared/mnist`` beside the
repo), served to bp as a mirror: ``BP_MNIST_MIRROR``. bp's cache defaults to
a temporary directory filled by ``bp download``. Nothing is written inside
the repository unless ``--markdown``/``--json`` point there.

The standard library plus bp's own dependencies (PyYAML; numpy in the in-process timing):
run it with the interpreter bp is installed in.
"""

import argparse
import gzip
import json
import os
import platform
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import yaml  # bp's own dependency: this script runs in bp's interpreter

REPO = Path(__file__).resolve().parent.parent
N_TRAIN = 60000
TARGET_ACC = 0.97
EPOCHS = 5
BASELINE = "4e0bdb0"  # bp before the threaded engine
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")

# The shared flags pin every setting the comparison depends on, so a change of
# bp's defaults cannot silently change what is measured.
_COMMON = ["--seed", "0", "--set", "data.validation=0", "--set", "data.limit=null",
           "--set", "train.schedule=constant", "--set", "train.nesterov=false",
           "--set", "train.optimizer=sgd", "--set", "train.weight_decay=0",
           "--set", "train.warmup_epochs=0", "--set", "train.label_smoothing=0",
           "--set", "train.max_norm=null", "--set", "train.patience=null",
           "--set", "model.dropout=0", "--set", "train.augment=false"]
_CE = ["--set", "model.activation=relu", "--set", "model.output=softmax",
       "--set", "model.loss=cross_entropy", "--set", "model.init=auto",
       "--set", "train.momentum=0.9", "--lr", "0.1", "--batch-size", "128"]
CONFIGS = {
    "a": dict(title="a 784-128-64-10 ReLU CE, SGD m0.9, batch 128",
              bp=["--hidden", "128,64"] + _CE),
    "b": dict(title="b 784-800-10 ReLU CE, SGD m0.9, batch 128",
              bp=["--hidden", "800"] + _CE),
    "c": dict(title="c 784-30-10 sigmoid, quadratic cost, SGD, batch 10",
              bp=["--hidden", "30", "--set", "model.activation=sigmoid",
                  "--set", "model.output=sigmoid", "--set", "model.loss=mse",
                  "--set", "model.init=normal", "--set", "train.momentum=0",
                  "--lr", "1.5", "--batch-size", "10"]),
}


def network_of(cfg):
    """(layer sizes, mini-batch rows, augmented?) of a benchmark network: ``CONFIGS``' a, b,
    c, or "default" (``configs/default.yaml``)."""
    if cfg == "default":
        doc = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
        return ([784, *doc["model"]["hidden"], 10], int(doc["train"]["batch_size"]),
                bool(doc["train"].get("augment")))
    flags = CONFIGS[cfg]["bp"]
    hidden = [int(h) for h in flags[flags.index("--hidden") + 1].split(",")]
    return [784, *hidden, 10], int(flags[flags.index("--batch-size") + 1]), False


# Runs a command, passes its output through, and writes its wall time and peak
# RSS (this wrapper has no other child) to the file named by argv[1].
WRAPPER = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss}, f)
"""

# In-process forward pass of bp over the test images: median of N.
BP_FORWARD = r"""
import gzip, json, sys, time
import numpy as np
from bpcli.checkpoint import load_model
from bpcli.metrics import predict
ckpt, images, labels, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def idx(path, offset):
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    return np.frombuffer(raw, np.uint8, offset=offset)
X = idx(images, 16).reshape(-1, 784)
y = idx(labels, 8)
model = load_model(ckpt)
times = []
for _ in range(n):
    t = time.perf_counter()
    P = predict(model.Ws, model.bs, model.spec, X)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "n": int(len(X)), "accuracy": float((P.argmax(1) == y).mean())}))
"""

# The GEMM-only floor of a network: the matrix products of one training step of
# bp (forward z = a @ W, the errors delta @ W.T, the gradients a.T @ delta), timed
# alone with NumPy's matmul on preallocated arrays, nothing else: samples/s = batch
# / (the median time of one step's products). The first layer has k inputs: the
# pixels inked in some training image (bp leaves the others out of its products).
FLOOR_PRODUCTS = r"""
import numpy as np
def floor_products(sizes, batch, k):
    # (feedforward, backprop): the products of one step, each a function
    rng = np.random.default_rng(0)
    widths = [k, *sizes[1:]]
    Ws = [rng.standard_normal((m, w), dtype=np.float32) for m, w in zip(widths[:-1], widths[1:])]
    a = [rng.random((batch, w), dtype=np.float32) for w in widths]
    d = [rng.random((batch, w), dtype=np.float32) for w in widths]
    g = [np.empty_like(W) for W in Ws]
    def feedforward():
        for l, W in enumerate(Ws):
            np.matmul(a[l], W, out=a[l + 1])
    def backprop():
        for l in range(len(Ws) - 1, -1, -1):
            np.matmul(a[l].T, d[l + 1], out=g[l])
            if l:
                np.matmul(d[l + 1], Ws[l].T, out=d[l])
    return feedforward, backprop
"""
GEMM_FLOOR = FLOOR_PRODUCTS + r"""
import json, sys, time
sizes, batch, k, n = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
feedforward, backprop = floor_products(sizes, batch, k)
def step():
    feedforward()
    backprop()
for _ in range(20):
    step()
times = []
for _ in range(n):
    t = time.perf_counter()
    for _ in range(50):
        step()
    times.append((time.perf_counter() - t) / 50)
times.sort()
print(json.dumps({"step_s": times[len(times) // 2], "samples_per_s": batch / times[len(times) // 2]}))
"""

# The inked-pixel count of MNIST's training images: the k above.
INKED = r"""
import gzip, json, sys
import numpy as np
raw = gzip.open(sys.argv[1]).read() if sys.argv[1].endswith(".gz") else open(sys.argv[1], "rb").read()
X = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784)
print(json.dumps({"inked": int(X.any(axis=0).sum())}))
"""

# Keeps one core busy: what another process on the machine does to bp.
SPIN = "while True: pass"

# The same forward pass in PyTorch: network a's shapes, untrained weights (the
# time of a dense ReLU MLP does not depend on the weights' values); uint8 ->
# float32 / 255 and the softmax are inside the timing, as in bp's predict.
TORCH_FORWARD = r"""
import gzip, json, sys, time
import numpy as np, torch, torch.nn as nn
images, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
raw = gzip.open(images).read() if images.endswith(".gz") else open(images, "rb").read()
X = torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 784).copy())
model = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
times = []
for _ in range(n):
    t = time.perf_counter()
    with torch.inference_mode():
        P = torch.softmax(model(X.float() / 255), dim=1)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "n": int(X.shape[0]), "torch": torch.__version__}))
"""


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------- setup

def find_mnist(explicit):
    cands = [explicit] if explicit else [os.environ.get("BP_TEST_MNIST"), "/work/shared/mnist",
                                         str(REPO.parent / "shared" / "mnist")]
    for c in cands:
        if c and (Path(c) / "t10k-images-idx3-ubyte.gz").is_file():
            return str(Path(c).resolve())
    if explicit:
        raise BenchError(f"--mnist {explicit}: no t10k-images-idx3-ubyte.gz there")
    return None


def find_bp():
    exe = Path(sys.executable).parent / "bp"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    log(f"note: no bp script beside {sys.executable}; using `{sys.executable} -m bpcli.cli`")
    return [sys.executable, "-m", "bpcli.cli"]


def torch_status(torch_py, peer):
    """None when usable, else the reason it is not."""
    if not Path(peer).is_file():
        return f"the torch peer {peer} does not exist"
    if not Path(torch_py).is_file():
        return f"no torch venv: {torch_py} does not exist"
    p = subprocess.run([torch_py, "-c", "import torch, numpy; print(torch.__version__)"],
                       capture_output=True, text=True)
    if p.returncode:
        return f"{torch_py} cannot import torch and numpy: {p.stderr.strip().splitlines()[-1:]}"
    return None


def machine_facts(bp_cmd):
    facts = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts["cpu"] = facts.get("cpu") or platform.processor() or "unknown"
    facts["cores"] = os.cpu_count()
    try:
        facts["cores_available"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        import numpy
        facts["numpy"] = numpy.__version__
        blas = None
        try:
            cfg = numpy.show_config(mode="dicts")
            b = cfg.get("Build Dependencies", {}).get("blas", {})
            blas = " ".join(str(b[k]) for k in ("name", "version") if b.get(k))
            if b.get("openblas configuration"):
                blas += f" ({b['openblas configuration']})"
        except Exception:
            pass
        try:
            import threadpoolctl
            info = threadpoolctl.threadpool_info()
            blas = "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')} "
                             f"threads={i.get('num_threads')}" for i in info) or blas
        except ImportError:
            pass
        facts["blas"] = blas or "unknown"
    except ImportError:
        facts["numpy"] = "not importable"
    try:
        from importlib.metadata import version
        facts["bp"] = version("bp")
    except Exception:
        facts["bp"] = "unknown"
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        facts["git"] = head + (" + uncommitted changes" if dirty else "") if head else "unknown"
    except OSError:
        facts["git"] = "unknown"
    facts["bp_command"] = " ".join(bp_cmd)
    return facts


def read_idx_bytes(path):
    raw = gzip.open(path).read() if str(path).endswith(".gz") else open(path, "rb").read()
    return raw


def find_split_file(data_dir, mnist, name):
    for p in (Path(data_dir) / name, Path(data_dir) / (name + ".gz")):
        if p.is_file():
            return str(p)
    if mnist and (Path(mnist) / (name + ".gz")).is_file():
        return str(Path(mnist) / (name + ".gz"))
    raise BenchError(f"cannot find {name} in {data_dir} or {mnist}")


def write_digit_png(path, images_path, labels_path, index=0, scale=10):
    """MNIST test digit `index` as a 280x280 8-bit grey PNG, dark ink on light paper."""
    raw = read_idx_bytes(images_path)
    pix = raw[16 + 784 * index: 16 + 784 * (index + 1)]
    label = read_idx_bytes(labels_path)[8 + index]
    side = 28 * scale
    rows = []
    for r in range(side):
        src = pix[(r // scale) * 28: (r // scale) * 28 + 28]
        rows.append(b"\x00" + bytes(255 - src[c // scale] for c in range(side)))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))
    Path(path).write_bytes(png)
    return label


# --------------------------------------------------------------------------- running

class Runner:
    def __init__(self, tmp, pin_core, timeout):
        self.tmp = Path(tmp)
        self.pin_core = pin_core
        self.timeout = timeout
        self.count = 0
        self.samples = []   # (label, pinned, 1-min load before, wall, cpu) of every command

    def run(self, cmd, env, pin, label):
        """Run `cmd` under the measuring wrapper; {rc, wall, maxrss_mib, stdout, stderr, cmd}."""
        self.count += 1
        out = self.tmp / f"measure-{self.count}.json"
        full = [sys.executable, "-c", WRAPPER, str(out)] + [str(c) for c in cmd]
        if pin and self.pin_core is not None:
            full = ["taskset", "-c", str(self.pin_core)] + full
        load = os.getloadavg()[0]
        try:
            p = subprocess.run(full, env=env, cwd=self.tmp, capture_output=True, text=True,
                               timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{label}: timed out after {self.timeout} s") from None
        try:
            m = json.loads(out.read_text())
        except (OSError, ValueError):
            raise BenchError(f"{label}: the measuring wrapper failed: {p.stderr.strip()[-400:]}") from None
        shown = (["taskset", "-c", str(self.pin_core)] if pin and self.pin_core is not None else []) + \
            [str(c) for c in cmd]
        self.samples.append((label, bool(pin and self.pin_core is not None), load, m["wall"], m.get("cpu")))
        res = {"rc": m["rc"], "wall": m["wall"], "maxrss_mib": m["maxrss_kib"] / 1024,
               "stdout": p.stdout, "stderr": p.stderr, "cmd": shlex.join(shown)}
        log(f"  {label}: {m['wall']:.3f} s" + ("" if m["rc"] == 0 else f"  (exit {m['rc']})"))
        if m["rc"] != 0:
            raise BenchError(f"{label}: exit {m['rc']}: {p.stderr.strip()[-600:]}\n  command: {res['cmd']}")
        return res


def last_json(text, label):
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    raise BenchError(f"{label}: no JSON on stdout: {text[-300:]!r}")


def read_metrics(run_dir):
    lines = Path(run_dir, "metrics.jsonl").read_text().splitlines()
    return [json.loads(l) for l in lines if l.strip()]


def steps_by_workers(run_dir):
    """How a run's steps ran (worker processes, threads, bp alone): its last checkpoint's
    metadata, a JSON document stored as the uint8 array meta.npy (read with the standard
    library: an .npy file is a header, then the raw bytes). None if unreadable."""
    try:
        with zipfile.ZipFile(Path(run_dir, "last.npz")) as z:
            raw = z.read("meta.npy")
        width = 2 if raw[6] == 1 else 4  # the header's length: 2 bytes in .npy version 1, else 4
        start = 8 + width + int.from_bytes(raw[8:8 + width], "little")
        return json.loads(raw[start:].decode("utf-8")).get("steps_by_workers")
    except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile):
        return None


def train_examples(run_dir, metrics):
    """Training examples per epoch: from the run's resolved config, else from metrics."""
    try:
        cfg = yaml.safe_load(Path(run_dir, "config.yaml").read_text())
        data = cfg.get("data", {}) or {}
        total = min(data.get("limit") or N_TRAIN, N_TRAIN)
        return total - int(data.get("validation") or 0)
    except Exception:
        m = metrics[0]
        if m.get("samples_per_second") and m.get("train_seconds"):
            return round(m["samples_per_second"] * m["train_seconds"])
        raise BenchError(f"cannot tell how many training examples {run_dir} used")


class BusyCore:
    """A process spinning on one core (the last this process may use) for the duration."""

    def __init__(self):
        try:
            self.core = max(os.sched_getaffinity(0))
        except AttributeError:
            self.core = 0
        self.proc = None

    def __enter__(self):
        cmd = [sys.executable, "-c", SPIN]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", str(self.core)] + cmd
        self.proc = subprocess.Popen(cmd)
        time.sleep(0.5)  # running before the measured command starts
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def baseline_bp(commit, venv, log_to=log):
    """The `bp` command of bp as of ``commit``, installed (once) into ``venv`` from a
    temporary `git worktree` of it; None with a reason when it cannot be made."""
    exe = Path(venv) / "bin" / "bp"
    marker = Path(venv) / "bp-commit"
    if exe.is_file() and marker.is_file() and marker.read_text().strip() == commit:
        return [str(exe)], None
    if not shutil.which("git"):
        return None, "git not found"
    tree = Path(tempfile.mkdtemp(prefix="bp-baseline-")) / "tree"
    log_to(f"making the baseline: bp at {commit} into {venv} (once)")
    steps = [["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit],
             [sys.executable, "-m", "venv", str(venv)],
             [str(Path(venv) / "bin" / "pip"), "install", "-q", str(tree)]]
    try:
        for cmd in steps:
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                return None, f"{shlex.join(cmd)} failed: {p.stderr.strip()[-300:]}"
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
    marker.write_text(commit + "\n")
    return [str(exe)], None


class Bench:
    def __init__(self, bp_cmd, mnist, data_dir, tmp, runner, torch_py, peer):
        self.bp = bp_cmd
        self.mnist = mnist
        self.data_dir = data_dir
        self.tmp = Path(tmp)
        self.runner = runner
        self.torch_py = torch_py
        self.peer = peer
        self.runs = 0
        self.errors = []
        base = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
        base["BP_RUNS_DIR"] = str(self.tmp / "runs")
        base["BP_DATA_DIR"] = str(data_dir)
        if mnist:
            base["BP_MNIST_MIRROR"] = mnist
        self.env_train = base                        # threads come from --threads
        self.env_one = dict(base, **{k: "1" for k in THREAD_VARS})  # commands without --threads

    def torch_env(self, threads):
        env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        return env

    def run_dir(self, name):
        self.runs += 1
        return self.tmp / "runs" / f"{self.runs:03d}-{name}"

    # -- bp
    def bp_train(self, cfg, threads, epochs, label, bp=None, env=None, pin=None):
        """One `bp train`; ``bp``: another bp command (the baseline's), ``env``: extra
        variables, ``pin``: pin to one core (default: when on 1 thread)."""
        rd = self.run_dir(f"{cfg}-t{threads}-e{epochs}")
        if cfg == "default":
            args = ["-c", str(REPO / "configs" / "default.yaml")]
        else:
            args = _COMMON + CONFIGS[cfg]["bp"]
        if epochs is not None:
            args = args + ["--epochs", str(epochs)]
        cmd = (bp or self.bp) + ["train", "--threads", str(threads)] + args + [
            "--data-dir", str(self.data_dir), "--run-dir", str(rd), "--quiet", "--json"]
        r = self.runner.run(cmd, dict(self.env_train, **(env or {})), pin=threads == 1 if pin is None else pin,
                            label=label)
        doc = last_json(r["stdout"], label)
        metrics = read_metrics(rd)
        ts = [m["train_seconds"] for m in metrics]
        n = train_examples(rd, metrics)
        return {"config": cfg, "threads_requested": threads, "threads_reported": doc.get("threads"),
                "epochs": len(metrics), "epoch_train_s": ts, "median_epoch_s": statistics.median(ts),
                "train_examples": n, "samples_per_s": n / statistics.median(ts),
                "steps_by_workers": steps_by_workers(rd) if threads > 1 else None,
                "train_s_total": sum(ts), "test_accuracy": doc.get("test_accuracy"),
                "wall_s": r["wall"], "peak_rss_mib": r["maxrss_mib"], "run_dir": str(rd), "cmd": r["cmd"]}

    def bp_time_to_target(self, label):
        """Fresh runs of `a` for k = 1, 2, ... epochs until one reaches TARGET_ACC on test."""
        tried = []
        for k in range(1, EPOCHS + 1):
            r = self.bp_train("a", 1, k, f"{label} k={k}")
            tried.append((k, r["test_accuracy"]))
            if r["test_accuracy"] is not None and r["test_accuracy"] >= TARGET_ACC:
                return {"epochs": k, "train_s": r["train_s_total"], "test_accuracy": r["test_accuracy"],
                        "tried": tried}
        return {"epochs": None, "train_s": None, "tried": tried}

    def gemm_floor(self, cfg, inked, n, label, half=False):
        """The GEMM-only floor of ``cfg``'s network (``network_of``) on its mini-batch, or half
        of it (one shard's products on 2 threads). The first layer has the ``inked`` inputs that
        bp computes, or all 784 where augmentation moves ink anywhere (as bp then does)."""
        sizes, batch, augmented = network_of(cfg)
        k, rows = 784 if augmented else inked, batch // 2 if half else batch
        r = self.runner.run([sys.executable, "-c", GEMM_FLOOR, json.dumps(sizes), str(rows), str(k), str(n)],
                            self.env_one, True, label)
        return dict(last_json(r["stdout"], label), k=k)

    # -- torch
    def torch_train(self, cfg, threads, label):
        cmd = [self.torch_py, self.peer, "--config", cfg, "--epochs", str(EPOCHS),
               "--threads", str(threads), "--mnist", self.mnist]
        r = self.runner.run(cmd, self.torch_env(threads), pin=threads == 1, label=label)
        doc = last_json(r["stdout"], label)
        acc, es = doc["test_acc"], doc["epoch_s"]
        cum, t97, k97 = 0.0, None, None
        for k, (a, e) in enumerate(zip(acc, es), 1):
            cum += e
            if a >= TARGET_ACC:
                t97, k97 = cum, k
                break
        return {"config": cfg, "threads_requested": threads, "threads_reported": doc.get("threads"),
                "epoch_s": es, "samples_per_s": doc["samples_per_s"], "test_accuracy": acc[-1],
                "test_acc_per_epoch": acc, "t97_s": t97, "t97_epochs": k97,
                "process_wall_s": doc.get("process_wall_s"), "peak_rss_mib": doc.get("peak_rss_mib"),
                "wall_s": r["wall"], "peer": doc.get("peer"), "cmd": r["cmd"]}

    def attempt(self, label, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except (BenchError, OSError, KeyError, ValueError, TypeError) as err:
            msg = f"{label}: {err}"
            self.errors.append(msg)
            log(f"  ERROR {msg}")
            return None


# --------------------------------------------------------------------------- the table

def fmt_rate(x):
    return "n/a" if x is None else f"{x:,.0f}/s"


def fmt_acc(x):
    return "n/a" if x is None else f"{100 * x:.2f}%"


def fmt_s(x):
    if x is None:
        return "n/a"
    return f"{1000 * x:.0f} ms" if x < 1 else f"{x:.2f} s"


def fmt_mib(x):
    return "n/a" if x is None else f"{x:.0f} MiB"


def ratio(b, t):
    return None if b is None or t is None or t == 0 else b / t


def build_rows(R, quick, repeats, have_torch):
    """[(measure, bp, torch, ratio, target, met)] from the aggregated results R."""
    rows = []

    def tv(x):
        return x if have_torch else None

    def row(measure, b, t, fmt, target="", met=None, show_ratio=True, t_text=None):
        r = ratio(b, t) if show_ratio else None
        rows.append([measure, fmt(b),
                     t_text if t_text is not None else fmt(t),
                     "" if r is None else f"{r:.2f}x", target,
                     "" if met is None else ("yes" if met else "NO")])

    goals = {"a": 2.0, "b": 1.2, "c": 5.0}  # the targets, bp / PyTorch
    for cfg in ("a", "b", "c"):
        if cfg not in R["train"]:
            continue
        d = R["train"][cfg]
        fn = " [1]" if cfg == "c" else ""
        rr = ratio(d["bp_sps"], tv(d["torch_sps"]))
        row(f"train {CONFIGS[cfg]['title']}{fn}: samples/s, 1 thread", d["bp_sps"], tv(d["torch_sps"]), fmt_rate,
            f">= {goals[cfg]}x PyTorch", None if rr is None else rr >= goals[cfg])
        row(f"  test accuracy after {EPOCHS} epochs ({cfg}, 1 thread)", d["bp_acc"], tv(d["torch_acc"]),
            fmt_acc, show_ratio=False)
    if "a2" in R:
        d = R["a2"]
        rr = ratio(d["bp_sps"], tv(d["torch_sps"]))
        row("train a: samples/s, 2 threads (not pinned)", d["bp_sps"], tv(d["torch_sps"]), fmt_rate,
            ">= 2.0x PyTorch", None if rr is None else rr >= 2.0)
        row(f"  test accuracy after {EPOCHS} epochs (a, 2 threads)", d["bp_acc"], tv(d["torch_acc"]), fmt_acc,
            show_ratio=False)
    if "t97" in R:
        d = R["t97"]

        def t97(x, k):
            return "not reached" if x is None else f"{fmt_s(x)} ({k} ep)"
        b_txt, t_txt = t97(d["bp_s"], d["bp_epochs"]), t97(d["torch_s"], d["torch_epochs"]) if have_torch else "n/a"
        r = ratio(d["bp_s"], tv(d["torch_s"]))
        met = "" if d["bp_s"] is None else ("yes" if d["bp_s"] <= 2.0 else "NO")
        rows.append([f"time to >= {100 * TARGET_ACC:.1f}% test accuracy, a, 1 thread: training seconds [2]",
                     b_txt, t_txt, "" if r is None else f"{r:.2f}x", "<= 2.0 s", met])
    if "a_wall" in R:
        d = R["a_wall"]
        row(f"`bp train` a, {EPOCHS} epochs, 1 thread: whole command wall [3]", d["bp"], tv(d["torch"]), fmt_s,
            "<= 3 s", None if d["bp"] is None else d["bp"] <= 3.0)
        row("  peak RSS of that command", d["bp_rss"], tv(d["torch_rss"]), fmt_mib)
    def at_most(value, limit):
        return None if value is None else value <= limit

    timed = {  # bp-only wall times: key -> (measure, limit in seconds)
        "evaluate": ("`bp evaluate CKPT --json` (10,000 test images): wall", 0.3),
        "help": ("`bp --help`: wall", 0.150),
        "predict": ("`bp predict one.png` (280x280, dark on light): wall", 0.400),
    }
    for key in ("evaluate", "forward", "help", "predict"):
        if key not in R:
            continue
        d = R[key]
        if key == "forward":
            row(f"  forward pass over 10,000 test images, in-process, median of {d['n']} [4]", d["bp"],
                tv(d["torch"]), fmt_s)
            continue
        measure, limit = timed[key]
        row(f"{measure}, median of {d['n']}", d["bp"], None, fmt_s, f"<= {fmt_s(limit)}",
            at_most(d["bp"], limit), t_text="n/a")
    if "default" in R:
        d = R["default"]
        ep = f"{d['epochs']} epochs" + (", quick" if quick else "")
        row(f"train configs/default.yaml ({ep}, augmented): samples/s, 2 threads [5]", d["sps"], None, fmt_rate,
            t_text="n/a")
        row(f"`bp train -c configs/default.yaml` ({ep}, 2 threads): wall", d["wall"], None, fmt_s,
            "<= 60 s [6]", None if quick or d["wall"] is None else d["wall"] <= 60.0, t_text="n/a")
        row("  its test accuracy", d["acc"], None, fmt_acc, ">= 99.0% [6]",
            None if quick or d["acc"] is None else d["acc"] >= 0.990, t_text="n/a")
        row("  its peak RSS", d["rss"], None, fmt_mib, "<= 250 MiB",
            None if d["rss"] is None else d["rss"] <= 250, t_text="n/a")
    return rows


ENGINE_HEADER = ["measure (engine)", "bp", "baseline", "bp/baseline", "target", "met?"]


def build_engine_rows(E, quick):
    """[(measure, bp, baseline, ratio, target, met)]: the engine against the GEMM floor, its
    own 1-thread speed, a busy core and the baseline bp (E = R["engine"])."""
    rows = []
    base = E.get("baseline") or "baseline"

    def fmt_x(x):
        return "n/a" if x is None else f"{x:.2f}x"

    def fmt_pct(x):
        return "n/a" if x is None else f"{100 * x:.0f}%"

    def row(measure, b, t, fmt, target="", met=None, show_ratio=True):
        r = ratio(b, t) if show_ratio else None
        rows.append([measure, fmt(b), fmt(t), "" if r is None else f"{r:.2f}x", target,
                     "" if met is None else ("yes" if met else "NO")])

    base_1 = {"a": E["base_a1"], "default": E["base_default1"]}
    for c, floor in E["floor"].items():
        row(f"GEMM-only floor of {c} (one step's products alone, k={E['k'][c]} inputs, 1 thread): samples/s",
            floor, None, fmt_rate, show_ratio=False)
        frac = ratio(E["bp_1"].get(c), floor)
        note = " (bp's time includes the augmentation)" if c == "default" else ""
        row(f"  {c}, 1 thread: fraction of that floor{note}", frac, ratio(base_1.get(c), floor), fmt_pct,
            ">= 90%" if c == "a" else "", None if c != "a" or frac is None else frac >= 0.90)
    two = ratio(E["bp_a2"], E["bp_1"].get("a"))
    row("a: 2 threads / 1 thread (samples/s)", two, ratio(E["base_a2"], E["base_a1"]), fmt_x,
        ">= 1.7x", None if two is None else two >= 1.7)
    vs_torch = ratio(E["bp_a2"], E["torch_a2"])
    row("a, 2 threads: bp / PyTorch (2 threads)", vs_torch, None, fmt_x, ">= 2.0x",
        None if vs_torch is None else vs_torch >= 2.0, show_ratio=False)
    row("a, 2 threads: samples/s", E["bp_a2"], E["base_a2"], fmt_rate)
    ceiling(rows, E, "a", E["bp_a2"], E["base_a2"], {
        "1.7x": 1.7 * (E["bp_1"].get("a") or 0), "2.0x PyTorch": 2.0 * (E["torch_a2"] or 0)})
    ep = " (quick: 2 epochs)" if quick else ""
    row(f"configs/default.yaml{ep}, 1 thread: samples/s", E["bp_default1"], E["base_default1"], fmt_rate)
    d2 = ratio(E["bp_default2"], E["base_default2"])
    row(f"configs/default.yaml{ep}, 2 threads: samples/s", E["bp_default2"], E["base_default2"], fmt_rate,
        f">= 1.6x {base}", None if d2 is None else d2 >= 1.6)
    ceiling(rows, E, "default", E["bp_default2"], E["base_default2"],
            {f"1.6x {base}": 1.6 * (E["base_default2"] or 0)})
    row("  its test accuracy (2 threads)", E["bp_default2_acc"], E["base_default2_acc"], fmt_acc,
        "same within noise", show_ratio=False)
    busy = E["busy"]
    for cfg in ("a", "default"):
        b = ratio(busy[f"bp {cfg} 2"], busy[f"bp {cfg} 1"])
        row(f"one core busy, {cfg}: 2 threads / 1 thread (neither pinned)", b,
            ratio(busy[f"base {cfg} 2"], busy[f"base {cfg} 1"]), fmt_x, ">= 0.9x", None if b is None else b >= 0.9,
            show_ratio=False)
        row(f"  one core busy, {cfg}: samples/s on 1 and on 2 threads",
            busy[f"bp {cfg} 1"], busy[f"bp {cfg} 2"], fmt_rate, show_ratio=False)
        if cfg == "a":  # what bp alone keeps when it runs both shards (as with the other core busy)
            row("  a: 2 threads' shards one after another on one idle core (BP_WORKERS=serial, pinned) / "
                "1 thread, for reference", ratio(E["a_serial"], E["bp_1"].get("a")), None, fmt_x,
                show_ratio=False)
    row("BLAS path, a, 1 thread: scipy.linalg.blas (BP_BLAS=scipy) / the default path", 
        ratio(E["a_scipy"], E["bp_1"].get("a")), None, fmt_x, "< 0.95x keeps the default [7]", show_ratio=False)
    return rows


def ceiling(rows, E, c, bp2, base2, needs):
    """Rows: what two cores can do at most on network ``c`` (twice the floor of one shard's
    products: half a mini-batch, 1 thread), the fractions of it that bp and the baseline
    reach on 2 threads, and the fraction each target in ``needs`` ({name: samples/s}) asks."""
    floor = E["shard_floor"].get(c)
    two_cores = None if floor is None else 2 * floor
    rows.append([f"  two cores' floor of {c}: 2 x one shard's products ({E['k'][c]} inputs, half a batch, "
                 "1 thread) [8]", fmt_rate(two_cores), "n/a", "", "", ""])
    asks = "; ".join(f"{name} needs {ratio(v, two_cores):.0%}" for name, v in needs.items()
                     if v and two_cores)
    reach = [None if ratio(x, two_cores) is None else f"{ratio(x, two_cores):.0%}" for x in (bp2, base2)]
    rows.append([f"  {c}, 2 threads: fraction of the two cores' floor", reach[0] or "n/a", reach[1] or "n/a",
                 "", asks, ""])


FOOTNOTES = [
    "[1] c: the torch peer minimises 0.5*sum((a-y)^2) averaged over the batch with lr 3.0; bp's quadratic "
    "cost is sum((a-y)^2), without the 1/2, so bp runs lr 1.5: the same steps.",
    "[2] cumulative training time (evaluation excluded) of the first epoch count whose test accuracy is >= 97.0%: "
    "bp from fresh `bp train --epochs k` runs (k = 1, 2, ...; constant schedule), torch from its per-epoch "
    "test accuracy and epoch times.",
    "[3] PyTorch column: the peer's whole process wall (imports, data loading, 5 epochs, a test evaluation "
    "after each epoch) and its own peak RSS.",
    "[4] PyTorch column: the same 784-128-64-10 shapes with untrained weights, uint8 -> float32/255 and softmax "
    "inside the timing like bp's predict; both pinned, 1 thread.",
    "[5] default.yaml holds out 5,000 validation images: 55,000 training examples per epoch; median over all "
    "its epochs of the training time (validation excluded).",
    "[6] the target stated in configs/default.yaml's comment.",
    "[7] bpcli/fast/blas.py: NumPy's own OpenBLAS (ctypes) is the default path while SciPy's public wrappers "
    "are >= 5% slower on this row; the engine table's baseline column is bp at the --baseline commit, "
    "installed from a git worktree into --baseline-venv; 'one core busy' runs a spinning process pinned to the "
    "last usable core.",
    "[8] the most two cores can do if a step were its products alone, each core's shard as fast as "
    "one thread alone; the augmentation, the activations, the update and the hand-over between the "
    "cores all come on top.",
    "samples/s = training examples / median per-epoch training time (evaluation excluded): bp's "
    "metrics.jsonl `train_seconds`, the peer's `epoch_s`. bp/PyTorch is the plain ratio (for times, lower "
    "is better).",
]


def text_table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    out = []
    for i, r in enumerate([header] + rows):
        out.append("  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w)
                             for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def md_table(rows, header):
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in esc]
    return "\n".join(out)


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=None, help="runs per median (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1 repeat, network a only, 2 epochs of default.yaml, fewer timings")
    ap.add_argument("--skip-torch", action="store_true", help="bp only (also automatic without the torch venv)")
    ap.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    ap.add_argument("--json", metavar="FILE", help="write the raw results as JSON")
    ap.add_argument("--data-dir", help="bp's MNIST cache (default: a temporary one filled from --mnist)")
    ap.add_argument("--mnist", help="a folder of the four gzipped MNIST files (default: $BP_TEST_MNIST, "
                                    "/work/shared/mnist, ../shared/mnist)")
    ap.add_argument("--torch-python", default=str(REPO / ".torch-venv" / "bin" / "python"))
    ap.add_argument("--peer", default=None, help="torch_peer.py (default: beside the MNIST folder's parent, "
                                                 "../shared/bench/torch_peer.py)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per command")
    ap.add_argument("--keep", action="store_true", help="keep the temporary run dirs")
    ap.add_argument("--baseline", default=BASELINE, metavar="COMMIT",
                    help=f"the bp to compare the engine rows with (default {BASELINE}, before the threaded engine)")
    ap.add_argument("--baseline-venv", default=str(REPO / ".baseline-venv"),
                    help="its venv, made once from a git worktree of it (default .baseline-venv in the repo)")
    ap.add_argument("--skip-baseline", action="store_true", help="no baseline rows")
    ap.add_argument("--skip-busy", action="store_true", help="no rows with one core kept busy")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        ap.error("--repeats must be >= 1")
    started = time.time()
    load_start = os.getloadavg()

    try:
        mnist = find_mnist(args.mnist)
    except BenchError as err:
        ap.error(str(err))
    bp_cmd = find_bp()
    args.torch_python = os.path.abspath(args.torch_python)   # not resolve(): a venv's python is a symlink
    peer = os.path.abspath(args.peer) if args.peer else None
    if peer is None:
        cands = [REPO.parent / "shared" / "bench" / "torch_peer.py", Path("/work/shared/bench/torch_peer.py")]
        peer = str(next((c for c in cands if c.is_file()), cands[0]))
    use_torch, torch_note = False, "skipped (--skip-torch)"
    if not args.skip_torch:
        why = torch_status(args.torch_python, peer)
        if why is None and not mnist:
            why = "no gzipped MNIST folder for the peer (--mnist)"
        if why:
            torch_note = f"skipped: {why}"
            log(f"note: PyTorch peer {torch_note}.\n  To create it (from the repo root): "
                f"python3 -m venv .torch-venv && .torch-venv/bin/pip install torch==2.13.0 numpy")
        else:
            use_torch, torch_note = True, args.torch_python
    pin_core = None
    if shutil.which("taskset"):
        try:
            pin_core = min(os.sched_getaffinity(0))
        except AttributeError:
            pin_core = 0
    else:
        log("note: taskset not found; 1-thread runs are not pinned to a core")

    tmp = tempfile.mkdtemp(prefix="bp-bench-")
    runner = Runner(tmp, pin_core, args.timeout)
    data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else str(Path(tmp) / "data")
    facts = machine_facts(bp_cmd)
    R, raw = {"train": {}}, {"train": {}}
    bench = Bench(bp_cmd, mnist, data_dir, tmp, runner, args.torch_python, peer)
    try:
        log(f"bp benchmark: {repeats} repeat(s), temp dir {tmp}, load average {load_start}")
        # data: fill the cache once so no timed run downloads
        if mnist:
            runner.run(bp_cmd + ["download", "--mirror", mnist, "--data-dir", data_dir], bench.env_one,
                       pin=False, label="bp download (cache)")
        images = find_split_file(data_dir, mnist, "t10k-images-idx3-ubyte")
        labels = find_split_file(data_dir, mnist, "t10k-labels-idx1-ubyte")

        cfgs = ["a"] if args.quick else ["a", "b", "c"]
        base_cmd = None
        if not args.skip_baseline:
            base_cmd, why = baseline_bp(args.baseline, args.baseline_venv)
            if why:
                bench.errors.append(f"baseline bp {args.baseline}: {why}")
        inked = bench.attempt("inked pixels", runner.run,
                              [sys.executable, "-c", INKED, find_split_file(data_dir, mnist, "train-images-idx3-ubyte")],
                              bench.env_one, False, "inked pixels of the training images")
        inked_k = last_json(inked["stdout"], "inked")["inked"] if inked else 784
        E = {}  # engine rows: key -> list of results

        def keep(key, label, fn, *a, **kw):
            r = bench.attempt(label, fn, *a, **kw)
            if r:
                E.setdefault(key, []).append(r)
        bp_runs = {c: [] for c in cfgs}
        th_runs = {c: [] for c in cfgs}
        bp2, th2, bp97, dflt = [], [], [], []
        dflt_epochs = 2 if args.quick else None
        for rep in range(1, repeats + 1):
            log(f"repeat {rep}/{repeats}")
            for c in cfgs:
                r = bench.attempt(f"bp {c}", bench.bp_train, c, 1, EPOCHS, f"bp train {c} 1 thread #{rep}")
                if r:
                    bp_runs[c].append(r)
                if use_torch:
                    r = bench.attempt(f"torch {c}", bench.torch_train, c, 1, f"torch {c} 1 thread #{rep}")
                    if r:
                        th_runs[c].append(r)
            r = bench.attempt("bp a 2 threads", bench.bp_train, "a", 2, EPOCHS, f"bp train a 2 threads #{rep}")
            if r:
                bp2.append(r)
            if use_torch:
                r = bench.attempt("torch a 2 threads", bench.torch_train, "a", 2, f"torch a 2 threads #{rep}")
                if r:
                    th2.append(r)
            r = bench.attempt("bp time to 97%", bench.bp_time_to_target, f"bp time-to-97% #{rep}")
            if r:
                bp97.append(r)
            r = bench.attempt("bp default", bench.bp_train, "default", 2, dflt_epochs,
                              f"bp train -c configs/default.yaml #{rep}")
            if r:
                dflt.append(r)
            # the engine rows: the GEMM floor, 1 and 2 threads, one core busy, the baseline, the BLAS path
            for c in cfgs + ["default"]:
                keep(f"floor {c}", f"GEMM floor {c}", bench.gemm_floor, c, inked_k, 5, f"GEMM-only floor {c} #{rep}")
            for c in ("a", "default"):  # one shard's products on 2 threads: half the mini-batch
                keep(f"shard floor {c}", f"GEMM floor {c}, half a batch", bench.gemm_floor, c, inked_k, 5,
                     f"GEMM-only floor {c}, half a batch #{rep}", half=True)
            keep("default 1", "bp default 1 thread", bench.bp_train, "default", 1, dflt_epochs,
                 f"bp train -c configs/default.yaml 1 thread #{rep}")
            keep("a scipy", "bp a BP_BLAS=scipy", bench.bp_train, "a", 1, EPOCHS,
                 f"bp train a 1 thread BP_BLAS=scipy #{rep}", env={"BP_BLAS": "scipy"})
            keep("a serial", "bp a 2 shards on 1 core", bench.bp_train, "a", 2, EPOCHS,
                 f"bp train a --threads 2 BP_WORKERS=serial, pinned #{rep}", env={"BP_WORKERS": "serial"}, pin=True)
            for who, cmd in (("bp", None), ("base", base_cmd)):
                if who == "base":
                    if cmd is None:
                        continue
                    for threads in (1, 2):
                        keep(f"base a {threads}", f"base a {threads}", bench.bp_train, "a", threads, EPOCHS,
                             f"bp@{args.baseline} train a {threads} thread(s) #{rep}", bp=cmd)
                        keep(f"base default {threads}", f"base default {threads}", bench.bp_train, "default",
                             threads, dflt_epochs, f"bp@{args.baseline} default {threads} thread(s) #{rep}", bp=cmd)
                if args.skip_busy:
                    continue
                for cfg, epochs in (("a", EPOCHS), ("default", dflt_epochs)):
                    for threads in (1, 2):
                        with BusyCore():  # not pinned: the system places bp beside the busy core
                            keep(f"{who} busy {cfg} {threads}", f"{who} busy {cfg} {threads}", bench.bp_train,
                                 cfg, threads, epochs, f"{who} {cfg} {threads} thread(s), one core busy #{rep}",
                                 bp=cmd, pin=False)

        def agg(runs, key):
            return median([r[key] for r in runs])

        for c in cfgs:
            R["train"][c] = {"bp_sps": agg(bp_runs[c], "samples_per_s"), "bp_acc": agg(bp_runs[c], "test_accuracy"),
                             "torch_sps": agg(th_runs[c], "samples_per_s"),
                             "torch_acc": agg(th_runs[c], "test_accuracy")}
            raw["train"][c] = {"bp": bp_runs[c], "torch": th_runs[c]}
        R["a2"] = {"bp_sps": agg(bp2, "samples_per_s"), "bp_acc": agg(bp2, "test_accuracy"),
                   "torch_sps": agg(th2, "samples_per_s"), "torch_acc": agg(th2, "test_accuracy"),
                   "bp_threads_reported": [r["threads_reported"] for r in bp2],
                   "bp_steps_by_workers": [r["steps_by_workers"] for r in bp2]}
        raw["a2"] = {"bp": bp2, "torch": th2}
        ok97 = [r for r in bp97 if r["epochs"]]
        R["t97"] = {"bp_s": agg(ok97, "train_s") if ok97 else None,
                    "bp_epochs": median([r["epochs"] for r in ok97]) if ok97 else None,
                    "torch_s": median([r["t97_s"] for r in th_runs.get("a", [])]),
                    "torch_epochs": median([r["t97_epochs"] for r in th_runs.get("a", [])])}
        for k in ("bp_epochs", "torch_epochs"):
            if R["t97"][k] is not None and float(R["t97"][k]).is_integer():
                R["t97"][k] = int(R["t97"][k])
        raw["t97"] = {"bp": bp97}
        R["a_wall"] = {"bp": agg(bp_runs["a"], "wall_s"), "bp_rss": agg(bp_runs["a"], "peak_rss_mib"),
                       "torch": agg(th_runs["a"], "process_wall_s"),
                       "torch_rss": agg(th_runs["a"], "peak_rss_mib")}

        # inference and start-up, pinned, one thread
        ckpt = None
        if bp_runs["a"]:
            ckpt = str(Path(bp_runs["a"][0]["run_dir"]) / "best.npz")
        n_eval = 3 if args.quick else 5
        n_cli = 3 if args.quick else 10
        log("inference and start-up")
        if ckpt:
            ev = []
            for i in range(n_eval):
                r = bench.attempt("bp evaluate", runner.run,
                                  bp_cmd + ["evaluate", ckpt, "--json", "--data-dir", data_dir],
                                  bench.env_one, True, f"bp evaluate #{i + 1}")
                if r:
                    ev.append(r)
            acc = None
            if ev:
                try:
                    acc = last_json(ev[0]["stdout"], "bp evaluate").get("accuracy")
                except BenchError as err:
                    bench.errors.append(str(err))
            R["evaluate"] = {"bp": median([r["wall"] for r in ev]), "n": n_eval, "accuracy": acc}
            raw["evaluate"] = [{k: r[k] for k in ("wall", "maxrss_mib", "cmd")} for r in ev]

            fw = bench.attempt("bp forward", runner.run,
                               [sys.executable, "-c", BP_FORWARD, ckpt, images, labels, str(n_eval)],
                               bench.env_one, True, "bp forward pass in-process")
            tfw = None
            if use_torch:
                tfw = bench.attempt("torch forward", runner.run,
                                    [args.torch_python, "-c", TORCH_FORWARD, images, str(n_eval), "1"],
                                    bench.torch_env(1), True, "torch forward pass in-process")
            fdoc = last_json(fw["stdout"], "bp forward") if fw else None
            tdoc = last_json(tfw["stdout"], "torch forward") if tfw else None
            R["forward"] = {"bp": median(fdoc["times"]) if fdoc else None,
                            "torch": median(tdoc["times"]) if tdoc else None, "n": n_eval,
                            "bp_accuracy": fdoc["accuracy"] if fdoc else None}
            raw["forward"] = {"bp": fdoc, "torch": tdoc}

        hp = []
        for i in range(n_cli):
            r = bench.attempt("bp --help", runner.run, bp_cmd + ["--help"], bench.env_one, True,
                              f"bp --help #{i + 1}")
            if r:
                hp.append(r["wall"])
        R["help"] = {"bp": median(hp), "n": n_cli}
        raw["help"] = hp

        if ckpt:
            png = Path(tmp) / "one.png"
            label = write_digit_png(png, images, labels)
            pr, digit = [], None
            for i in range(n_cli):
                r = bench.attempt("bp predict", runner.run,
                                  bp_cmd + ["predict", str(png), "--model", ckpt, "--json"],
                                  bench.env_one, True, f"bp predict one.png #{i + 1}")
                if r:
                    pr.append(r["wall"])
                    if digit is None:
                        try:
                            digit = last_json(r["stdout"], "bp predict")[0].get("digit")
                        except (BenchError, IndexError, AttributeError):
                            pass
            R["predict"] = {"bp": median(pr), "n": n_cli, "true_digit": label, "predicted": digit}
            raw["predict"] = pr

        def sps(key):
            return median([r["samples_per_s"] for r in E.get(key, [])])

        R["engine"] = {
            "k": {c: (E.get(f"floor {c}") or [{"k": "?"}])[0]["k"] for c in cfgs + ["default"]},
            "baseline": None if base_cmd is None else args.baseline,
            "floor": {c: sps(f"floor {c}") for c in cfgs + ["default"]},
            "shard_floor": {c: sps(f"shard floor {c}") for c in ("a", "default")},
            "bp_1": dict({c: R["train"][c]["bp_sps"] for c in cfgs}, default=sps("default 1")),
            "bp_a2": R["a2"]["bp_sps"], "torch_a2": R["a2"]["torch_sps"],
            "base_a1": sps("base a 1"), "base_a2": sps("base a 2"),
            "bp_default1": sps("default 1"), "bp_default2": agg(dflt, "samples_per_s"),
            "base_default1": sps("base default 1"), "base_default2": sps("base default 2"),
            "bp_default2_acc": agg(dflt, "test_accuracy"),
            "base_default2_acc": median([r["test_accuracy"] for r in E.get("base default 2", [])]),
            "a_scipy": sps("a scipy"), "a_serial": sps("a serial"),
            "busy": {f"{who} {cfg} {t}": sps(f"{who} busy {cfg} {t}")
                     for who in ("bp", "base") for cfg in ("a", "default") for t in (1, 2)},
        }
        raw["engine"] = E

        if dflt:
            R["default"] = {"sps": agg(dflt, "samples_per_s"), "wall": agg(dflt, "wall_s"),
                            "acc": agg(dflt, "test_accuracy"), "rss": agg(dflt, "peak_rss_mib"),
                            "epochs": dflt[0]["epochs"]}
            raw["default"] = dflt
    except BenchError as err:
        log(f"Error: {err}")
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ report
    elapsed = time.time() - started
    load_end = os.getloadavg()
    header = ["measure", "bp", "PyTorch", "bp/PyTorch", "target", "met?"]
    rows = build_rows(R, args.quick, repeats, use_torch)
    torch_ver = next((r["peer"] for runs in raw["train"].values() for r in runs.get("torch", []) if r.get("peer")),
                     None)
    cmdline = "python " + shlex.join(["benchmarks/run.py"] + (sys.argv[1:] if argv is None else list(argv)))
    pin = f"taskset -c {pin_core}" if pin_core is not None else "not pinned (no taskset)"
    loads = [x[2] for x in runner.samples]
    busy = [x[4] / x[3] for x in runner.samples if x[1] and x[4] is not None and x[3] >= 0.5]
    load_line = (f"load average (1/5/15 min): start {' '.join(f'{x:.2f}' for x in load_start)}, "
                 f"end {' '.join(f'{x:.2f}' for x in load_end)}")
    if loads:
        load_line += (f"; 1-min load before each of the {len(loads)} commands: min {min(loads):.2f}, "
                      f"median {statistics.median(loads):.2f}, max {max(loads):.2f}")
    two = [x for x in runner.samples if "2 threads" in x[0] and x[4] is not None and x[3] > 0]
    if two:
        load_line += "; 2-thread runs' CPU/wall: " + ", ".join(
            f"{x[0].split(' #')[0].replace(' 2 threads', '')} {100 * x[4] / x[3]:.0f}%" for x in two)
    if busy:
        load_line += (f"; pinned commands (>= 0.5 s) got CPU for median {100 * statistics.median(busy):.0f}% "
                      f"(min {100 * min(busy):.0f}%) of their wall time (100% = the core was theirs)")
    lines_facts = [
        f"command: {cmdline}",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(started))}; "
        f"took {elapsed:.0f} s; repeats: {repeats}{' (quick)' if args.quick else ''}",
        f"machine: {facts['cpu']}; {facts['cores']} cores ({facts.get('cores_available', '?')} available); "
        f"{facts['platform']}",
        load_line,
        f"bp {facts['bp']} (git {facts['git']}), Python {facts['python']}, numpy {facts['numpy']}, "
        f"BLAS: {facts['blas']}",
        f"PyTorch peer: {torch_ver or torch_note}",
        f"threads: 1, pinned with `{pin}` (bp `--threads 1`, torch `--threads 1` + OMP_NUM_THREADS=1; "
        f"commands without --threads get OMP/OPENBLAS/MKL_NUM_THREADS=1), except the rows that say 2 threads "
        f"(`--threads 2`, not pinned). Training: {EPOCHS} epochs, seed 0, all 60,000 training images, "
        f"constant lr, no Nesterov.",
    ]
    notes = []
    if "evaluate" in R and R["evaluate"].get("accuracy") is not None:
        notes.append(f"evaluated checkpoint: network a after {EPOCHS} epochs, test accuracy "
                     f"{fmt_acc(R['evaluate']['accuracy'])}")
    if "predict" in R:
        notes.append(f"one.png: MNIST test image 0 (a {R['predict']['true_digit']}), bp predicted "
                     f"{R['predict']['predicted']}")
    if R.get("a2", {}).get("bp_threads_reported"):
        notes.append(f"bp reported threads for the 2-thread runs: {R['a2']['bp_threads_reported']}")
    if R.get("a2", {}).get("bp_steps_by_workers"):
        notes.append(f"how the steps of bp's 2-thread runs of a ran: {R['a2']['bp_steps_by_workers']}")
    busy = (raw.get("engine") or {}).get("bp busy a 2") or []
    if busy:
        notes.append(f"how the steps of its 2-thread runs of a with one core busy ran: "
                     f"{[r['steps_by_workers'] for r in busy]}")
    for e in bench.errors:
        notes.append(f"ERROR {e}")

    engine_rows = build_engine_rows(R["engine"], args.quick) if "engine" in R else []
    engine_text = ("\n\n" + text_table(engine_rows, ENGINE_HEADER)) if engine_rows else ""
    text = "\n".join(lines_facts) + "\n\n" + text_table(rows, header) + engine_text + "\n\n" + "\n".join(FOOTNOTES) + \
        ("\n" + "\n".join(notes) if notes else "")
    print(text)
    if args.markdown:
        md = "\n".join(["```", *lines_facts, "```", "", md_table(rows, header), "",
                        *([md_table(engine_rows, ENGINE_HEADER), ""] if engine_rows else []),
                        *[f"{f}  " for f in FOOTNOTES], *[f"{n}  " for n in notes]]) + "\n"
        Path(args.markdown).write_text(md)
        log(f"wrote {args.markdown}")
    if args.json:
        doc = {"command": cmdline, "started": started, "elapsed_s": elapsed, "repeats": repeats,
               "quick": args.quick, "load_average": {"start": load_start, "end": load_end},
               "machine": facts, "torch": torch_ver or torch_note, "pin": pin, "summary": R,
               "table": {"header": header, "rows": rows}, "footnotes": FOOTNOTES, "notes": notes,
               "errors": bench.errors, "raw": raw,
               "commands": [dict(zip(("label", "pinned", "load1_before", "wall_s", "cpu_s"), x))
                            for x in runner.samples]}
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str) + "\n")
        log(f"wrote {args.json}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
