"""The web page of bp export --web / bp serve: the files, the commands, and the page in a real Chromium.

The browser tests drive Debian's headless Chromium (/usr/bin/chromium,
/usr/bin/chromedriver) with Selenium: real pointer events on the pad, the
page's JavaScript held to bp's Python (prepare, predict_proba, explain) on
real MNIST and on models trained in the session. Without the browser they
skip, except in CI ($CI set), where they fail: .ci/run installs it.

Screenshots go to $BP_SCREENSHOTS when set (the README's come from
``BP_SCREENSHOTS=docs/img pytest tests/test_web.py``), else to a temp folder.
"""

import base64
import contextlib
import fnmatch
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bpcli import web, websample
from bpcli.checkpoint import load_model, save_checkpoint
from bpcli.cli import cli
from bpcli.errors import ConfigError
from bpcli.network import Spec, init_params

ROOT = Path(__file__).parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small float32 checkpoint as bp train writes it (784-16-16-10 sigmoid + mse, like seed.yaml)."""
    spec = Spec([784, 16, 16, 10], "sigmoid", "sigmoid", "mse")
    Ws, bs = init_params(spec, np.random.default_rng(0))
    bs = [b + 0.1 for b in bs]
    path = tmp_path_factory.mktemp("model") / "best.npz"
    config = {"seed": 0, "data": {"dir": "data", "validation": 0, "limit": None},
              "model": {"hidden": [16, 16], "activation": "sigmoid", "output": "sigmoid", "loss": "mse",
                        "init": "xavier"},
              "train": {"lr": 0.5}}
    save_checkpoint(path, Ws, bs, {"sizes": spec.sizes, "config": config, "epoch": 1})
    return path


@pytest.fixture(autouse=True)
def no_data_dir(tmp_path, monkeypatch):
    """The page's checks run the model on MNIST's test set when the data dir holds it: never the
    user's ./data here, an empty folder (so a fixed random sample)."""
    monkeypatch.setenv("BP_DATA_DIR", str(tmp_path / "no-data"))


def read_model_js(path):
    text = Path(path).read_text(encoding="utf-8")
    prefix = "window.BP_MODEL = "
    start = text.index(prefix) + len(prefix)
    return json.loads(text[start:text.rindex(";")])


# ---------------------------------------------------------------------------
# The files


def test_write_site_writes_the_page_and_the_exact_weights(checkpoint, tmp_path):
    model = load_model(checkpoint)
    written = web.write_site(model, checkpoint, tmp_path / "site")
    assert [Path(p).name for p in written] == ["index.html", "app.js", "style.css", "model.js", "sample.js"]
    html = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    # self-contained: its scripts and style are the site's own files, nothing from elsewhere (the
    # icon is an empty inline one, so that a browser asks no server for /favicon.ico)
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == ["data:,", "style.css", "model.js", "sample.js", "app.js"]
    assert (tmp_path / "site" / "sample.js").read_text().endswith("window.BP_SAMPLE = null;\n")  # no Train panel
    doc = read_model_js(tmp_path / "site" / "model.js")
    assert doc["sizes"] == [784, 16, 16, 10] and doc["lr"] == 0.5 and doc["checkpoint"] == "best.npz"
    assert (doc["activation"], doc["output"], doc["loss"]) == ("sigmoid", "sigmoid", "mse")
    for b64, array in zip(doc["W"] + doc["b"], model.Ws + model.bs):
        decoded = np.frombuffer(base64.b64decode(b64), dtype="<f4").reshape(array.shape)
        assert np.array_equal(decoded, array)


def test_write_site_never_overwrites_a_page_silently(checkpoint, tmp_path):
    model = load_model(checkpoint)
    site = tmp_path / "site"
    site.mkdir()
    (site / "notes.txt").write_text("mine")
    web.write_site(model, checkpoint, site)  # a folder without a page is fine
    (site / "index.html").write_text("edited")
    with pytest.raises(ConfigError, match="already holds index.html; pass --force"):
        web.write_site(model, checkpoint, site)
    assert (site / "index.html").read_text() == "edited"
    web.write_site(model, checkpoint, site, force=True)
    assert (site / "index.html").read_bytes() == web.page_asset("index.html")
    assert (site / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        web.write_site(model, checkpoint, tmp_path / "file")


def test_write_site_never_writes_through_a_link(checkpoint, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (tmp_path / "elsewhere.js").write_text("keep")
    (site / "app.js").symlink_to(tmp_path / "elsewhere.js")
    with pytest.raises(ConfigError, match="symbolic link"):
        web.write_site(load_model(checkpoint), checkpoint, site, force=True)
    assert (tmp_path / "elsewhere.js").read_text() == "keep"


def test_every_page_file_is_package_data():
    """pyproject's package-data globs cover bpcli/webpage, so `pip install .` ships the page."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bpcli"]
    files = sorted(p.name for p in (ROOT / "bpcli" / "webpage").iterdir())
    assert files == sorted(web.PAGE_FILES)
    for name in files:
        assert any(fnmatch.fnmatch(f"webpage/{name}", g) for g in globs), name


# ---------------------------------------------------------------------------
# The commands


def test_cli_export_web_writes_the_site_and_refuses_to_overwrite_it(checkpoint, tmp_path):
    # (bp export also has --onnx on the export branch; this tests its --web half)
    site, no_sample = tmp_path / "site", ["--train-sample", "0"]  # the sample: test_websample.py
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--web", str(site), *no_sample])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(site / n) for n in web.SITE_FILES]
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--web", str(site), *no_sample])
    assert result.exit_code == 2 and "pass --force" in result.output
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--web", str(site), "--force", *no_sample])
    assert result.exit_code == 0, result.output


def test_cli_export_web_bad_checkpoint_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    result = CliRunner().invoke(cli, ["export", str(bad), "--web", str(tmp_path / "site")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert not (tmp_path / "site").exists()


def _serve(args, tmp_path):
    """``bp serve ARGS`` (no Train panel: no MNIST here) in a session of its own, with
    ``tmp_path`` its TMPDIR and working folder."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.Popen([sys.executable, "-m", "bpcli.cli", "serve", "--train-sample", "0", *args], env=env,
                            cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _kill_group(proc):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def test_cli_serve_serves_the_page_on_loopback_until_ctrl_c(checkpoint, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = _serve([str(checkpoint), "--train-sample", "0"], tmp)  # with a sample: test_websample.py
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert url, line + proc.stderr.read()
        assert os.listdir(tmp) == []  # the site is in memory: nothing on disk to leave behind
        with urllib.request.urlopen(url.group(0) + "index.html", timeout=10) as r:
            assert r.read() == web.page_asset("index.html")
        with urllib.request.urlopen(url.group(0) + "model.js", timeout=10) as r:
            assert r.read().decode() == web.model_script(load_model(checkpoint), checkpoint)
        with urllib.request.urlopen(url.group(0) + "sample.js", timeout=10) as r:
            assert r.read().decode() == websample.sample_script(None)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, err
    assert err.startswith("stopped serving") and "Traceback" not in err  # the way to stop it: no Error
    assert os.listdir(tmp) == []


def test_cli_serve_port_in_use_is_one_error_line(checkpoint, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = CliRunner().invoke(cli, ["serve", str(checkpoint), "--port", str(s.getsockname()[1]),
                                          "--train-sample", "0"])
    assert result.exit_code == 1, result.output
    assert "cannot listen on 127.0.0.1:" in result.output and "--port" in result.output


# ---------------------------------------------------------------------------
# Writing only what was asked, whole or not at all


def test_export_web_never_writes_through_a_linked_folder(checkpoint, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "site").symlink_to(tmp_path / "real")
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--web", str(tmp_path / "site")])
    assert result.exit_code == 2, result.output
    assert "is a symbolic link" in result.stderr and len(result.stderr.splitlines()) == 1
    assert list((tmp_path / "real").iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_export_web_force_never_replaces_a_fifo_or_a_folder(checkpoint, tmp_path, kind):
    site = tmp_path / "site"
    site.mkdir()
    os.mkfifo(site / "app.js") if kind == "fifo" else (site / "app.js").mkdir()
    with pytest.raises(ConfigError, match="named pipe" if kind == "fifo" else "is a folder"):
        web.write_site(load_model(checkpoint), checkpoint, site, force=True)
    assert sorted(p.name for p in site.iterdir()) == ["app.js"]


def test_export_web_prints_each_written_file_on_one_line(checkpoint, tmp_path):
    """A folder name holding a newline or an escape sequence printed raw split a file's line in
    two (or drove the terminal); --onnx already printed its file escaped."""
    site = tmp_path / "a\nb\x1b]0;x\x07"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--web", str(site), "--train-sample", "0"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(web.SITE_FILES) and not any("\x1b" in line for line in lines), lines
    assert sorted(p.name for p in site.iterdir()) == sorted(web.SITE_FILES)


def test_train_sample_without_web_is_a_usage_error(checkpoint, tmp_path):
    """--train-sample shapes the page; with --onnx it was silently ignored."""
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--onnx", str(tmp_path / "m.onnx"),
                                      "--train-sample", "5"])
    assert result.exit_code == 2 and "--train-sample" in result.stderr and "--web" in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_export_web_on_a_full_disk_leaves_nothing_and_a_retry_needs_no_force(checkpoint, small_disk):
    """The three page files fit, model.js does not: no page file and no folder is left (3 of
    4 files were, and a retry was refused without --force)."""
    disk, leave = small_disk
    page_bytes = sum(len(web.page_asset(name)) for name in web.PAGE_FILES)
    model_bytes = len(web.model_script(load_model(checkpoint), checkpoint))
    assert model_bytes > 40_000
    leave(page_bytes + 16_384)  # room for the page's files (in 4 kB pages), not for model.js
    site = disk / "new" / "site"
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--web", str(site), "--train-sample", "0"])
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.stderr and len(result.stderr.splitlines()) == 1
    assert sorted(p.name for p in disk.iterdir()) == [".filler"]
    (disk / ".filler").unlink()
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--web", str(site), "--train-sample", "0"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in site.iterdir()) == sorted(web.SITE_FILES)


def test_export_web_force_on_a_full_disk_keeps_the_old_page_whole(checkpoint, small_disk):
    disk, leave = small_disk
    site = disk / "site"
    site.mkdir()
    for name in web.SITE_FILES:
        (site / name).write_text(f"the old {name}")
    leave(len(web.page_asset("app.js")) + 16_384)
    result = CliRunner().invoke(cli, ["export", str(checkpoint), "--web", str(site), "--force"])
    assert result.exit_code == 1, result.output
    assert {p.name: p.read_text() for p in site.iterdir()} == {n: f"the old {n}" for n in web.SITE_FILES}


def test_a_model_whose_outputs_overflow_gets_no_page(tmp_path):
    """export --onnx and evaluate refuse it; the page did not (every probability 0 or NaN)."""
    path = checkpoint_with([784, 8, 10], tmp_path / "best.npz")
    model = load_model(path)
    save_checkpoint(path, [W * 1e20 for W in model.Ws], model.bs, model.meta)  # finite; z overflows
    result = CliRunner().invoke(cli, ["export", str(path), "--web", str(tmp_path / "site")])
    assert result.exit_code == 1, result.output
    assert "are not numbers: the model has diverged" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "site").exists()
    result = CliRunner().invoke(cli, ["serve", str(path)])
    assert result.exit_code == 1 and "are not numbers: the model has diverged" in result.stderr


def test_a_model_over_the_pages_limit_is_refused_before_its_weights_are_read(tmp_path):
    """A 74M-parameter model became a 393 MB model.js at 1.5 GB of memory, silently. The limit is
    read from the metadata: this checkpoint's arrays do not even match it, and are never read."""
    hidden = web.MAX_PARAMETERS // 785 + 1
    config = {"model": {"hidden": [hidden]}, "train": {"lr": 0.1}}
    path = tmp_path / "big" / "best.npz"
    path.parent.mkdir()
    Ws, bs = init_params(Spec([784, 8, 10]), np.random.default_rng(0))
    save_checkpoint(path, Ws, bs, {"sizes": [784, hidden, 10], "config": config, "epoch": 1})
    for args in (["export", str(path), "--web", str(tmp_path / "site")], ["serve", str(path)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert f"the page takes models of up to {web.MAX_PARAMETERS:,} parameters" in result.stderr
        assert "--onnx" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "site").exists()
    model = load_model(checkpoint_with([784, 8, 10], tmp_path / "small.npz"))
    model.spec = Spec([784, hidden, 10])
    with pytest.raises(ConfigError, match="the page takes models of up to"):
        web.write_site(model, None, tmp_path / "site")


def checkpoint_with(sizes, path, **meta):
    spec = Spec(sizes, "relu", "softmax", "cross_entropy")
    Ws, bs = init_params(spec, np.random.default_rng(0))
    config = {"model": {"hidden": sizes[1:-1]}, "train": {"lr": 0.1}}
    save_checkpoint(path, Ws, bs, {"sizes": sizes, "config": config, "epoch": 1, **meta})
    return path


@pytest.mark.parametrize("epoch", [float("nan"), "<b>7</b>", [1, 2]])
def test_a_checkpoint_with_an_odd_epoch_is_one_error_line(tmp_path, epoch):
    path = checkpoint_with([784, 8, 10], tmp_path / "best.npz", epoch=epoch)
    for args in (["export", str(path), "--web", str(tmp_path / "site")], ["serve", str(path)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: checkpoint ") and "epoch" in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "site").exists()


# ---------------------------------------------------------------------------
# bp serve under hostile clients and signals


@contextlib.contextmanager
def serving(checkpoint, tmp_path):
    """``bp serve CHECKPOINT`` running: yields (process, port); killed (its group) afterwards."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = _serve([str(checkpoint)], cwd)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert url, line + proc.stderr.read()
        yield proc, int(url.group(1))
    finally:
        _kill_group(proc)


def request(port, path="/", host=None, method="GET"):
    """(status, body) of one request; ``host`` replaces the Host header."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", f"127.0.0.1:{port}" if host is None else host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def stop(proc, signum=signal.SIGINT):
    """Send ``signum``; the exit code and stderr once it has ended (within 20 s, or the test fails)."""
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def test_serve_answers_only_to_loopback_host_names(checkpoint, tmp_path):
    """DNS rebinding: a page on attacker.example whose name now resolves to 127.0.0.1 reads
    model.js in the browser unless the server checks the Host its requests carry."""
    with serving(checkpoint, tmp_path) as (proc, port):
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}"):
            assert request(port, "/model.js", host)[0] == 200, host
        for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1", f"localhost:{port + 1}",
                     f"127.0.0.1.attacker.example:{port}", ""):
            for path in ("/", "/model.js", "/index.html"):
                status, body = request(port, path, host)
                assert status == 421 and b"BP_MODEL" not in body, (host, path)
        code, err = stop(proc)
    assert code == 130 and err == "stopped serving\n"


def test_serve_refuses_a_request_with_two_host_headers(checkpoint, tmp_path):
    """Which of two Host headers a proxy or cache in between honours is anyone's guess (HTTP
    says answer 400): a request that names the server and attacker.example is not answered."""
    import socket

    with serving(checkpoint, tmp_path) as (proc, port):
        for hosts in ((f"127.0.0.1:{port}", "attacker.example"), ("attacker.example", f"127.0.0.1:{port}"),
                      (f"127.0.0.1:{port}", f"127.0.0.1:{port}")):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(("GET /model.js HTTP/1.1\r\n" + "".join(f"Host: {h}\r\n" for h in hosts)
                           + "Connection: close\r\n\r\n").encode())
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.0 4") and b"BP_MODEL" not in answer, (hosts, answer[:40])
        assert request(port, "/model.js")[0] == 200
        code, err = stop(proc)
    assert code == 130 and err == "stopped serving\n"


def test_no_request_prints_a_traceback(tmp_path):
    """A reload mid-download (the client resets the connection), a NUL in the path, a broken
    request line, methods the page never uses: answered or dropped, nothing on the terminal."""
    import socket
    import struct

    ckpt = checkpoint_with([784, 1000, 10], tmp_path / "best.npz")  # a 4 MB model.js
    with serving(ckpt, tmp_path) as (proc, port):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(f"GET /model.js HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                assert s.recv(1000).startswith(b"HTTP/1.0 200")
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close: RST
        for path in ("/index.html%00", "/../../etc/passwd", "//[x", "/%", "/" + "a" * 70000):
            assert request(port, path)[0] in (400, 404, 414), path
        assert request(port, "/", method="POST")[0] == 501
        for raw in (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\0" * 100, b"GET\r\n\r\n", b"\r\n",
                    b"GET /index.html\0 HTTP/1.0\r\n\r\n", b"GET /\xff HTTP/1.0\r\nHost: \xff\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(raw)
                s.recv(1000)
        assert request(port, "/index.html") == (200, web.page_asset("index.html"))
        code, err = stop(proc)
    assert code == 130 and err == "stopped serving\n"


def test_serve_bounds_its_connections_and_threads(checkpoint, tmp_path):
    """200 idle connections took 200 threads (3,000 took SIGTERM 100 s to honour): the server
    serves MAX_CONNECTIONS at once, answers the rest 503 at once, and still stops on SIGTERM."""
    import socket

    with serving(checkpoint, tmp_path) as (proc, port):
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(200)]
        try:
            status, _ = request(port, "/index.html")  # accepted after the 200, refused at once
            threads = int(re.search(r"Threads:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text())[1])
            code, err = stop(proc, signal.SIGTERM)
        finally:
            for s in idle:
                s.close()
    assert status == 503
    assert threads <= web.MAX_CONNECTIONS + 4  # the main thread, and BLAS's own
    assert code == 130 and err == "stopped serving\n"


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 130), (signal.SIGHUP, 130),
                                         (signal.SIGQUIT, -signal.SIGQUIT), (signal.SIGKILL, -signal.SIGKILL)])
def test_every_signal_stops_serve_and_leaves_nothing(checkpoint, tmp_path, signum, code):
    """SIGHUP (the terminal closed) was not handled; SIGHUP, SIGQUIT and SIGKILL left the temp
    folder with the model in it. The site is in memory now: nothing on disk to leave."""
    tmp = tmp_path / "cwd"
    with serving(checkpoint, tmp_path) as (proc, port):
        assert request(port, "/model.js")[0] == 200
        returncode, err = stop(proc, signum)
    assert returncode == code, err
    assert "Traceback" not in err and (err == "stopped serving\n" if code == 130 else True)
    assert list(tmp.iterdir()) == []  # its TMPDIR and working folder


# ---------------------------------------------------------------------------
# The page in a real browser


def _browser_or_skip():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        why = (f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
               "(apt-get install chromium chromium-driver) to run the browser tests")
        if os.environ.get("CI"):
            pytest.fail(why + " (CI must run them: .ci/run installs them)")
        pytest.skip(why)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with no way to the network of its own, and its console log kept."""
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1300,2400"):
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: Selenium Manager never tries to download one
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _train(config, args, data_dir, run_dir):
    result = CliRunner().invoke(cli, ["train", "-c", str(ROOT / "configs" / config), *args, "--quiet", "--json",
                                      "--data-dir", str(data_dir), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir / "best.npz"


@pytest.fixture(scope="module")
def models(mnist_data_dir, tmp_path_factory):
    """Two models trained briefly on real MNIST: the explanation's 784-16-16-10 sigmoid + mse net
    (configs/seed.yaml) and the default 784-512-256-10 relu + softmax shape (configs/default.yaml)."""
    root = tmp_path_factory.mktemp("web-models")
    seed = _train("seed.yaml", ["--epochs", "1", "--set", "data.limit=20000"], mnist_data_dir, root / "seed")
    default = _train("default.yaml", ["--epochs", "1", "--set", "data.limit=10000", "--set", "train.augment=false"],
                     mnist_data_dir, root / "default")
    sites = {}
    for name, ckpt in (("seed", seed), ("default", default)):
        sites[name] = (ckpt, load_model(ckpt), root / f"{name}-site")
        web.write_site(sites[name][1], ckpt, sites[name][2], data_dir=mnist_data_dir)
    return sites


@pytest.fixture(scope="module")
def mnist_test(mnist_data_dir):
    from bpcli.data import load_mnist

    data = load_mnist(mnist_data_dir, offline=True, progress=False)
    return data.test_images, data.test_labels


def open_page(browser, site):
    browser.get((site / "index.html").as_uri())
    assert browser.execute_script("return document.body.dataset.ready") == "1"


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("BP_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# Strokes in pad pixels (280 x 280), as a hand would draw them.
DIGITS = {
    "7": [[(75, 60), (205, 60), (180, 120), (150, 180), (130, 235)]],
    "2": [[(90, 95), (110, 65), (150, 55), (185, 75), (190, 110), (160, 150), (120, 190), (85, 225),
           (200, 225)]],
    "0": [[(140, 50), (100, 65), (85, 110), (85, 170), (105, 215), (140, 230), (175, 215), (195, 170),
           (195, 110), (180, 65), (140, 50)]],
    "4": [[(170, 45), (80, 170), (210, 170)], [(170, 45), (170, 240)]],
}


def draw(browser, strokes, stop_after=None):
    """Draw strokes on the pad with real pointer events (mouse input through WebDriver actions)."""
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    pad = browser.find_element("id", "pad")
    size = pad.size
    actions = ActionBuilder(browser, mouse=PointerInput(interaction.POINTER_MOUSE, "mouse"), duration=20)
    moves = 0
    for stroke in strokes:
        (x, y), rest = stroke[0], stroke[1:]
        # move_to offsets are from the element's centre
        actions.pointer_action.move_to(pad, round(x - size["width"] / 2), round(y - size["height"] / 2))
        actions.pointer_action.pointer_down()
        for x, y in rest:
            actions.pointer_action.move_to(pad, round(x - size["width"] / 2), round(y - size["height"] / 2))
            moves += 1
            if stop_after is not None and moves >= stop_after:
                break
        actions.pointer_action.pointer_up()
    actions.perform()


def page_state(browser):
    """The page after the pending animation frame has run."""
    return browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        requestAnimationFrame(() => requestAnimationFrame(() => done({
            input: window.bp.input(), png: window.bp.padImage(),
            digit: document.getElementById('digit').textContent,
            preview: Array.from(document.getElementById('preview').getContext('2d')
                                .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0)),
        })));""")


def save_screenshot(browser, selector, last_id, path):
    """A PNG of the element ``selector`` down to the bottom of element ``last_id``, palette-reduced."""
    from PIL import Image

    element = browser.find_element("css selector", selector)
    im = Image.open(io.BytesIO(element.screenshot_as_png))
    bottom = browser.execute_script("return arguments[0].getBoundingClientRect().bottom - "
                                    "arguments[1].getBoundingClientRect().top + 8",
                                    browser.find_element("id", last_id), element)
    scale = im.width / element.size["width"]
    im = im.crop((0, 0, im.width, min(im.height, round(bottom * scale))))
    im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def python_prepared(png_data_url, tmp_path, name):
    """bp predict's 28x28 for the pad's picture, saved as a PNG file."""
    from bpcli.image import load_digit

    path = tmp_path / f"{name}.png"
    path.write_bytes(base64.b64decode(png_data_url.split(",", 1)[1]))
    return load_digit(path)


# The page's 28x28 against bp predict's. Both run the same steps with the same
# resampling (Pillow's, reproduced exactly), but the page in float64 and numpy
# in float32, and the centre of mass is a float32 sum: a value can land on the
# other side of a rounding step (one level of 255) and, rarely, a centre that
# falls on x.5 rounds the other way (a shift by one pixel). So the comparison:
# at most 1 level of 255 apart per pixel, i.e. the same digit to the eye and to
# the network, measured by the probabilities below.
LEVEL_TOLERANCE = 1
PROBABILITY_TOLERANCE = 1e-3


@pytest.mark.parametrize("net", ["seed", "default"])
def test_drawing_with_pointer_events_shows_the_28x28_and_a_prediction(browser, models, net, tmp_path, shots):
    ckpt, model, site = models[net]
    open_page(browser, site)
    assert page_state(browser)["input"] is None  # a blank pad: nothing to classify
    for name, strokes in DIGITS.items():
        browser.find_element("id", "clear").click()
        draw(browser, strokes)
        state = page_state(browser)
        assert state["input"] is not None, name
        page_u8 = np.rint(np.array(state["input"]) * 255).astype(np.int64)
        assert state["preview"] == page_u8.tolist()  # the preview shows what the network gets
        ours = python_prepared(state["png"], tmp_path, name).astype(np.int64)
        assert np.abs(page_u8 - ours).max() <= LEVEL_TOLERANCE, name
        P = model.predict_proba(ours[None, :].astype(np.uint8))[0]
        page_P = browser.execute_script("return window.bp.predict(arguments[0])", state["input"])
        assert np.abs(np.array(page_P) - P).max() < PROBABILITY_TOLERANCE, name
        assert state["digit"] == str(int(np.argmax(page_P)))
    # mid-drawing: the first strokes of a 2, for the README
    browser.find_element("id", "clear").click()
    draw(browser, DIGITS["2"], stop_after=6)
    assert page_state(browser)["input"] is not None
    save_screenshot(browser, "main", "net-section", shots / f"web-{net}-drawing.png")


def test_the_page_prepares_pictures_like_bp(browser, models):
    """bp.prepare on grey pictures of several sizes and stroke widths (thin ones get thickened,
    small ones are not blurred) gives image.prepare's 28x28."""
    from PIL import Image, ImageDraw

    from bpcli.image import prepare

    open_page(browser, models["seed"][2])
    cases = [(280, 18, [(75, 60), (205, 60), (130, 235)]), (280, 2, [(60, 40), (220, 60), (120, 250)]),
             (100, 6, [(30, 20), (70, 20), (45, 85)]), (400, 30, [(100, 300), (200, 80), (300, 300)]),
             (64, 3, [(20, 10), (40, 30), (22, 55)])]
    for size, width, points in cases:
        im = Image.new("L", (size, size), 255)
        ImageDraw.Draw(im).line(points, fill=0, width=width, joint="curve")
        grey = np.asarray(im, dtype=np.float32) / 255.0
        page = browser.execute_script("return window.bp.prepare(arguments[0], arguments[1], arguments[1])",
                                      grey.ravel().tolist(), size)
        ours = prepare(grey)
        assert page is not None, (size, width)
        assert np.abs(np.array(page) - ours.astype(np.int64)).max() <= LEVEL_TOLERANCE, (size, width)
    blank = np.ones(100 * 100).tolist()
    assert browser.execute_script("return window.bp.prepare(arguments[0], 100, 100)", blank) is None


@pytest.mark.parametrize("net", ["seed", "default"])
def test_predict_gives_bps_probabilities_on_200_mnist_images(browser, models, mnist_test, net):
    ckpt, model, site = models[net]
    X = mnist_test[0][:200]
    open_page(browser, site)
    page = np.array(browser.execute_script("return arguments[0].map((x) => window.bp.predict(x))",
                                           (X / 255.0).tolist()))
    P = model.predict_proba(X)
    assert page.shape == (200, 10)
    assert np.array_equal(page.argmax(axis=1), P.argmax(axis=1))
    assert np.abs(page - P).max() < 1e-4


def assert_same_document(page, ours, path="doc"):
    """The same keys everywhere; numbers within 1e-4 relative (and 1e-9 absolute); the rest equal."""
    if isinstance(ours, dict):
        assert isinstance(page, dict) and set(page) == set(ours), (path, sorted(page), sorted(ours))
        for key in ours:
            assert_same_document(page[key], ours[key], f"{path}.{key}")
    elif isinstance(ours, list):
        assert isinstance(page, list) and len(page) == len(ours), path
        for i, (a, b) in enumerate(zip(page, ours)):
            assert_same_document(a, b, f"{path}[{i}]")
    elif isinstance(ours, float) and not isinstance(page, bool):
        assert math.isclose(page, ours, rel_tol=1e-4, abs_tol=1e-9), (path, page, ours)
    else:
        assert page == ours, (path, page, ours)


@pytest.mark.parametrize("net,index,target", [("seed", 0, 3), ("seed", 8, None), ("default", 1, 7),
                                              ("default", 4, None)])
def test_explain_gives_bp_explains_numbers(browser, models, mnist_test, mnist_data_dir, net, index, target):
    ckpt, model, site = models[net]
    args = ["explain", "--index", str(index), "--model", str(ckpt), "--batch", "0", "--json",
            "--data-dir", str(mnist_data_dir)] + ([] if target is None else ["--target", str(target)])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    ours = json.loads(result.stdout)
    open_page(browser, site)
    x = (mnist_test[0][index] / 255.0).tolist()
    label = int(mnist_test[1][index])
    page = browser.execute_script("return window.bp.explain(arguments[0], arguments[1], 5, arguments[2])",
                                  x, target, label)
    # where the input came from differs by nature: a file or MNIST index there, the page here
    assert page.pop("input") == {"source": "page"} and page.pop("checkpoint") == ckpt.name
    del ours["input"], ours["checkpoint"]
    assert ours["zoom_out"] is None and page["zoom_out"] is None  # --batch 0: the page has no MNIST batch
    assert_same_document(page, ours)
    assert page["target_from"] == ("label" if target is None else "flag")


@pytest.mark.parametrize("net", ["seed", "default"])
def test_one_sgd_step_in_the_page_lowers_the_cost_as_bp_would(browser, models, net, shots):
    from bpcli.explain import batch_cost, batch_gradient

    ckpt, model, site = models[net]
    open_page(browser, site)
    draw(browser, DIGITS["4"])
    browser.find_element("css selector", "#targets button[data-digit='9']").click()
    # the gradient that asks for a 9, before the step: the README's picture
    save_screenshot(browser, "#backprop-section", "backprop-section", shots / f"web-{net}-gradient.png")
    browser.find_element("id", "step").click()
    costs = browser.execute_script("return window.bp.costs()")
    x = np.array(page_state(browser)["input"])
    assert len(costs) == 2 and costs[1] < costs[0]
    # the same step in bp's Python: w <- w - lr dC0/dw on this one example, target 9
    Ws = [W.astype(np.float64) for W in model.Ws]
    bs = [b.astype(np.float64) for b in model.bs]
    C, dWs, dbs = batch_gradient(Ws, bs, model.spec, x[None, :], np.array([9]))
    lr = model.meta["config"]["train"]["lr"]
    after = batch_cost([W - lr * g for W, g in zip(Ws, dWs)], [b - lr * g for b, g in zip(bs, dbs)],
                       model.spec, x[None, :], np.array([9]))
    assert costs == pytest.approx([C, after], rel=1e-6)
    assert "→" in browser.find_element("id", "step-log").text
    browser.find_element("id", "reset").click()
    page = browser.execute_script("return window.bp.predict(arguments[0])", x.tolist())
    assert np.abs(np.array(page) - model.predict_proba(x[None, :].astype(np.float32))[0]).max() < 1e-4


def test_the_page_works_from_file_with_the_network_off_and_logs_no_errors(browser, models):
    browser.get_log("browser")  # drop what earlier tests logged
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    try:
        for net in ("seed", "default"):
            open_page(browser, models[net][2])
            draw(browser, DIGITS["7"])
            assert page_state(browser)["input"] is not None
            browser.find_element("id", "step").click()
            # everything the page loaded or points at is on disk (Chromium records no timing for file://)
            urls = browser.execute_script("""return [...performance.getEntriesByType('resource').map((e) => e.name),
                ...Array.from(document.querySelectorAll('[src], [href]'), (e) => e.src || e.href)]""")
            urls = [url for url in urls if url != "data:,"]  # the empty inline icon
            assert len(urls) == 4 and all(url.startswith("file://") for url in urls), urls
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    logs = browser.get_log("browser")
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")] == []


# ---------------------------------------------------------------------------
# The Train panel: mini-batch SGD in the page, held to bp's reference backprop


def read_sample_js(path):
    text = Path(path).read_text(encoding="utf-8")
    prefix = "window.BP_SAMPLE = "
    start = text.index(prefix) + len(prefix)
    return json.loads(text[start:text.rindex(";")])


@pytest.fixture(scope="module")
def train_sites(checkpoint, models, mnist_data_dir, tmp_path_factory):
    """Sites with the default sample (3,000 + 1,000 real MNIST images): the seed-shaped
    checkpoint's, and the default-shaped (784-512-256-10 relu + softmax) model's.
    -> {name: (model, site, sample document)}"""
    from bpcli.data import load_mnist

    data = load_mnist(mnist_data_dir, offline=True, progress=False)
    doc = websample.sample_document(data, websample.DEFAULT_TRAIN_SAMPLE)
    root = tmp_path_factory.mktemp("train-sites")
    sites = {}
    for name, ckpt in (("seed", checkpoint), ("default", models["default"][0])):
        model = load_model(ckpt)
        web.write_site(model, ckpt, root / name, sample=doc)
        sites[name] = (model, root / name, doc)
    return sites


def sample_arrays(doc, part="train"):
    """X float32 (n, 784) as bp feeds it (uint8 / 255) and labels y, from the sample document."""
    X = np.frombuffer(base64.b64decode(doc[part]["pixels"]), np.uint8).reshape(-1, 784)
    y = np.frombuffer(base64.b64decode(doc[part]["labels"]), np.uint8)
    return X.astype(np.float32) / 255, y.astype(np.int64)


def call(browser, script, *args):
    """Run ``script`` (a Promise-returning expression of window.bp) and return what it resolves to."""
    result = browser.execute_async_script(f"""
        const done = arguments[arguments.length - 1];
        Promise.resolve().then(() => {script}).then((v) => done({{ok: v}}), (e) => done({{error: String(e)}}));""", *args)
    assert "error" not in result, result["error"]
    return result["ok"]


def open_train_page(browser, site):
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(browser, site)
    WebDriverWait(browser, 60).until(lambda b: b.execute_script("return document.body.dataset.trainReady") == "1")


def page_params(state):
    """state() -> (Ws (fan_in, fan_out), bs) as float32: rows = outputs transposed back to bp's layout."""
    return ([np.array(W, dtype=np.float32).T for W in state["W"]], [np.array(b, dtype=np.float32) for b in state["b"]])


def reference_sgd(Ws, bs, spec, X, y, batches, lr):
    """bp's reference (network.forward/backward, optim.SGD without momentum, float32) replaying
    the page's mini-batches: -> (Ws, bs, each step's mini-batch cost)."""
    from bpcli.network import backward, cost, forward, one_hot
    from bpcli.optim import SGD

    theta = np.concatenate([a.ravel() for a in Ws + bs]).astype(np.float32)
    views, at = [], 0
    for a in Ws + bs:  # Ws and bs are views into theta, which SGD updates in place
        views.append(theta[at:at + a.size].reshape(a.shape))
        at += a.size
    Ws, bs = views[:len(Ws)], views[len(Ws):]
    sgd, costs = SGD(theta), []
    for batch in batches:
        acts, masks = forward(Ws, bs, X[batch], spec)
        Y = one_hot(y[batch], spec.sizes[-1])
        costs.append(cost(acts[-1], Y, spec.output, spec.loss))
        dWs, dbs = backward(Ws, acts, masks, Y, spec)
        sgd.step(np.concatenate([g.ravel() for g in dWs + dbs]), lr)
    return [W.copy() for W in Ws], [b.copy() for b in bs], costs


# The page computes in float64 on float32 weights and stores each updated weight as
# float32; bp computes in float32 (BLAS sums in its own order). After 200 steps the
# two differ by ~1e-6 of a layer's largest |weight| (measured: 1.6e-7 to 8.3e-7).
WEIGHT_TOLERANCE = 1e-5


def assert_same_weights(state, Ws, bs):
    page_Ws, page_bs = page_params(state)
    for l, (a, b) in enumerate(zip(page_Ws + page_bs, Ws + bs)):
        assert a.shape == b.shape, l
        scale = np.abs(b).max()
        assert np.abs(a - b).max() <= WEIGHT_TOLERANCE * scale, (l, np.abs(a - b).max(), scale)


def test_training_from_scratch_in_the_page_is_bps_sgd_and_learns(browser, train_sites):
    """From scratch, 200 steps of batch 10 at eta 3 on the 3,000-image sample: the page's
    weights are bp's reference SGD on the same batches (at step 100 and 200), the sample's
    cost falls below half, and held-out accuracy rises from chance (10 %) to above 40 %."""
    from bpcli.network import cost, forward, one_hot

    model, site, doc = train_sites["seed"]
    X, y = sample_arrays(doc)
    Xh, yh = sample_arrays(doc, "heldout")
    open_train_page(browser, site)
    # bp.sample() is the embedded sample in its order, pixels in [0, 1]
    n, labels, first = browser.execute_script("""const s = window.bp.sample();
        return [s.pixels.length, s.labels, s.pixels.slice(0, 5)]""")
    assert n == len(y) == 3000 and labels == y.tolist() and np.array_equal(np.array(first, np.float32), X[:5])
    start = call(browser, "window.bp.reset({from: 'scratch', seed: 0})")
    _, spec, Ws, bs = websample.scratch_start(0)
    assert start["step"] == 0 and start["batches"] == [] and start["sizes"] == [784, 16, 16, 10]
    page_Ws, page_bs = page_params(start)
    assert all(np.array_equal(a, b) for a, b in zip(page_Ws + page_bs, Ws + bs))  # bit for bit bp's start
    assert start["accuracy"] < 0.2
    costs = []
    for _ in range(2):
        result = call(browser, "window.bp.train({steps: 100, batch: 10, lr: 3})")
        state = browser.execute_script("return window.bp.state()")
        batches = state["batches"][len(costs):]
        assert len(result["cost"]) == 100 and len(batches) == 100 and state["step"] == len(costs) + 100
        assert all(len(b) == 10 and len(set(b)) == 10 and 0 <= min(b) and max(b) < len(y) for b in batches)
        Ws, bs, step_costs = reference_sgd(Ws, bs, spec, X, y, batches, 3.0)
        assert_same_weights(state, Ws, bs)
        assert np.allclose(result["cost"], step_costs, rtol=1e-5, atol=0)
        costs += result["cost"]
    # one epoch of 3,000 images is 300 batches of 10: the 200 batches are 2,000 distinct images
    assert len({i for b in state["batches"] for i in b}) == 2000
    acts, _ = forward(*page_params(state), X, spec)
    assert state["sampleCost"] == pytest.approx(cost(acts[-1], one_hot(y), spec.output, spec.loss), rel=1e-5)
    acts, _ = forward(*page_params(state), Xh, spec)
    assert state["accuracy"] == pytest.approx(np.mean(acts[-1].argmax(axis=1) == yh), abs=2e-3)
    assert state["sampleCost"] < 0.5 * start["sampleCost"]
    assert result["accuracy"] == state["accuracy"] > 0.4  # chance is 0.1


def wait_for(browser, condition, timeout=60, what="condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda b: b.execute_script(condition), message=what)


def train_state_shown(browser):
    """state() once the panel has drawn it (the snapshot the pictures and the table show)."""
    wait_for(browser, "const s = window.bp.state(); return !s.running && document.body.dataset.trainShown === String(s.step)",
             what="the panel to draw the last state")
    return browser.execute_script("return window.bp.state()")


def test_the_page_stays_live_while_training_and_pause_stops_it(browser, train_sites, shots):
    """Play with the button; draw mid-training (predicted by the training network); pause
    stops within one step; the weight pictures and the nudge table show state()'s numbers."""
    from bpcli.network import Spec, forward

    model, site, doc = train_sites["seed"]
    X, y = sample_arrays(doc)
    spec = Spec([784, 16, 16, 10], "sigmoid", "sigmoid", "mse")
    open_train_page(browser, site)
    call(browser, "window.bp.reset({from: 'scratch', seed: 0})")
    browser.find_element("id", "train-play").click()
    wait_for(browser, "return window.bp.state().step >= 300", what="300 steps")
    before = browser.execute_script("return window.bp.state().step")
    draw(browser, DIGITS["0"])
    wait_for(browser, "return document.getElementById('digit').textContent !== '?'", what="a prediction")
    # training went on while the pad was drawn on and the page answered
    wait_for(browser, f"return window.bp.state().step > {before} && window.bp.state().running", what="more steps")
    # an element screenshot is cut at the viewport's edge: the panel's top first
    browser.execute_script("document.getElementById('train-section').scrollIntoView()")
    save_screenshot(browser, "#train-section", "nudge-table", shots / "web-train.png")
    save_screenshot(browser, "main", "net-section", shots / "web-train-drawing.png")
    paused = call(browser, "window.bp.pause()")
    assert paused["step"] - paused["stepWhenAsked"] <= 1
    state = train_state_shown(browser)
    assert state["step"] == paused["step"] and not state["running"]
    assert call(browser, "window.bp.pause()")["step"] == paused["step"]  # nothing ran after the pause
    # the drawing is predicted by the network as it is now
    x = np.array(page_state(browser)["input"], dtype=np.float32)
    acts, _ = forward(*page_params(state), x[None, :], spec)
    assert browser.find_element("id", "digit").text == str(int(acts[-1].argmax()))
    # the pause button: play again, pause by click
    browser.find_element("id", "train-play").click()
    wait_for(browser, f"return window.bp.state().step > {state['step'] + 20}", what="20 more steps")
    browser.find_element("id", "train-pause").click()
    wait_for(browser, "return !document.getElementById('train-play').disabled", what="the pause")
    state = train_state_shown(browser)
    assert call(browser, "window.bp.pause()")["step"] == state["step"]
    # one more step: its nudges are computed on the weights before it
    Ws, bs = page_params(state)
    browser.find_element("id", "train-step").click()
    wait_for(browser, f"return window.bp.state().step === {state['step'] + 1}", what="one step")
    state = train_state_shown(browser)
    nudges = state["nudges"]
    assert nudges["batch"] == state["batches"][-1] and nudges["labels"] == y[nudges["batch"]].tolist()
    acts, _ = forward(Ws, bs, X[nudges["batch"]], spec)
    wishes = 2 * (np.eye(10)[y[nudges["batch"]]] - acts[-1])  # -dC0/da = 2 (y - a)
    assert np.allclose(nudges["rows"], wishes, atol=1e-5)
    assert np.allclose(nudges["average"], wishes.mean(axis=0), atol=1e-5)
    # the table shows those numbers: one row per example, then the average
    rows = browser.execute_script("""return Array.from(document.querySelectorAll('#nudge-rows tr'),
        (tr) => Array.from(tr.children, (td) => td.textContent))""")
    def shown(v):
        return f"{v:.2f}".replace("-0.00", "0.00")

    expected = [[f"#{doc['train']['indices'][i]}", str(label), *map(shown, row)]
                for i, label, row in zip(nudges["batch"], nudges["labels"], nudges["rows"])]
    expected.append(["average", "", *map(shown, nudges["average"])])
    assert rows == expected
    # the weight pictures show W[0]'s rows: blue positive, red negative, white 0, each at its own scale
    pictures = browser.execute_script("""return Array.from(document.querySelectorAll('#weight-pictures canvas'),
        (c) => Array.from(c.getContext('2d').getImageData(0, 0, 28, 28).data))""")
    assert len(pictures) == 16
    for u, rgba in enumerate(pictures):
        w = np.array(state["W"][0][u])
        t = np.abs(w) / np.abs(w).max()
        colour = np.where((w >= 0)[:, None], [0x2F, 0x6F, 0xDF], [0xD8, 0x40, 0x2F])
        expected = 255 + (colour - 255) * t[:, None]
        assert np.abs(np.array(rgba).reshape(784, 4)[:, :3] - expected).max() <= 0.5 + 1e-9, u


def test_training_the_exported_model_and_back_to_scratch(browser, train_sites, mnist_test):
    """From the model (784-512-256-10 relu + softmax + cross-entropy): the page starts from
    its exact weights and its steps are bp's; the pad and bp.predict use the trained network;
    another seed draws other scratch weights of the same distribution."""
    from bpcli.network import forward

    model, site, doc = train_sites["default"]
    X, y = sample_arrays(doc)
    open_train_page(browser, site)
    call(browser, "window.bp.reset({from: 'scratch', seed: 0})")
    start = call(browser, "window.bp.reset({from: 'model', seed: 3})")
    assert start["sizes"] == [784, 512, 256, 10] and start["step"] == 0
    page_Ws, page_bs = page_params(start)
    assert all(np.array_equal(a, b) for a, b in zip(page_Ws + page_bs, model.Ws + model.bs))
    call(browser, "window.bp.train({steps: 10, batch: 32, lr: 0.05})")
    state = browser.execute_script("return window.bp.state()")
    Ws, bs, _ = reference_sgd(model.Ws, model.bs, model.spec, X, y, state["batches"], 0.05)
    assert_same_weights(state, Ws, bs)
    images = mnist_test[0][:20] / 255.0
    page = np.array(browser.execute_script("return arguments[0].map((x) => window.bp.predict(x))", images.tolist()))
    acts, _ = forward(*page_params(state), images.astype(np.float32), model.spec)
    assert np.abs(page - acts[-1]).max() < 1e-4
    other = call(browser, "window.bp.reset({from: 'scratch', seed: 5})")
    W = np.array(other["W"][0])
    assert W.shape == (16, 784) and abs(W.mean()) < 0.003 and W.std() == pytest.approx(np.sqrt(1 / 784), rel=0.03)
    assert all(not any(b) for b in other["b"])
    assert not np.array_equal(W.T, websample.scratch_start(0)[2][0])


def test_the_train_panel_works_from_file_offline_without_warnings(browser, train_sites, models):
    browser.get_log("browser")  # drop what earlier tests logged
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    try:
        open_train_page(browser, train_sites["seed"][1])
        browser.find_element("id", "train-step").click()
        wait_for(browser, "return window.bp.state().step === 1", what="one step")
        call(browser, "window.bp.train({steps: 20, batch: 10, lr: 3})")
        urls = browser.execute_script("""return [...performance.getEntriesByType('resource').map((e) => e.name),
            ...Array.from(document.querySelectorAll('[src], [href]'), (e) => e.src || e.href)]""")
        assert len(urls) >= 4 and all(url.startswith(("file://", "blob:", "data:,")) for url in urls), urls
        # a page without a sample says how to get one, and its API says so too
        open_page(browser, models["seed"][2])
        assert browser.find_element("id", "train-none").is_displayed()
        assert not browser.find_element("id", "train-panel").is_displayed()
        error = browser.execute_async_script("""const done = arguments[arguments.length - 1];
            window.bp.train({steps: 1}).then(() => done('trained'), (e) => done(e.message))""")
        assert "--train-sample N" in error
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    logs = browser.get_log("browser")
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")] == []


def test_the_served_page_logs_no_errors(browser, checkpoint, tmp_path):
    """A fresh load from bp serve: the browser asked the server for /favicon.ico, a 404 in its console."""
    browser.get_log("browser")  # drop what earlier tests logged
    with serving(checkpoint, tmp_path) as (proc, port):
        browser.get(f"http://localhost:{port}/")
        assert browser.execute_script("return document.body.dataset.ready") == "1"
        draw(browser, DIGITS["7"])
        assert page_state(browser)["input"] is not None
        logs = browser.get_log("browser")
        code, err = stop(proc)
    assert [entry for entry in logs if entry["level"] in ("SEVERE", "WARNING")] == []
    assert code == 130 and err == "stopped serving\n"
