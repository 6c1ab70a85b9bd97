"""Shared fixtures: tiny generated MNIST files, a loopback HTTP mirror, the real MNIST if present.

No test reaches the internet: mirrors are served on 127.0.0.1, and the
``no_internet`` fixture makes any other connection fail loudly. No test touches
the user's files: ``away_from_the_users_files`` gives the whole suite (session
and module fixtures included) a home, working folder, runs root and data dir of
its own, and the session fails if the checkout's ``runs/`` or ``data/`` changed.
"""

import collections
import gzip
import hashlib
import http.server
import itertools
import os
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from synthetic import NO_MNIST, real_mnist_folder
from untouched import USERS_FOLDERS, changes, snapshot

# CI replays the same examples every run (no flaky red builds); at a developer's
# desk hypothesis explores new ones, which is where it finds bugs.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

TINY_COUNTS = {"train": 6, "t10k": 4}


def idx_bytes(array):
    """IDX bytes for a uint8 array: images (n, 28, 28) -> magic 2051, labels (n,) -> 2049."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 2051 if array.ndim == 3 else 2049
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def make_tiny_mnist(seed=0):
    """``({name: idx bytes}, {name: FileSpec})``: four valid, tiny MNIST-shaped files."""
    from bpcli.download import FileSpec

    rng = np.random.default_rng(seed)
    contents, specs = {}, {}
    for prefix, n in TINY_COUNTS.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for name, array, kind in ((f"{prefix}-images-idx3-ubyte", images, "images"),
                                  (f"{prefix}-labels-idx1-ubyte", labels, "labels")):
            contents[name] = idx_bytes(array)
            specs[name] = FileSpec(hashlib.sha256(contents[name]).hexdigest(), kind, n)
    return contents, specs


@pytest.fixture(autouse=True)
def every_thread_gets_a_shard(monkeypatch):
    """The tests' networks and batches are tiny: the engine would keep them on one shard
    (sharding.SHARD_MIN_MACS). In-process tests split them all the same, one shard per
    thread, so that sharding, reduction order and resume are tested on many threads;
    test_fast.py holds the real rule to its own test."""
    from bpcli.fast.parallel import sharding

    monkeypatch.setattr(sharding, "SHARD_MIN_MACS", 1)


#: what a user's environment may say to bp, or to what bp's tests start (matplotlib, Chromium)
USER_SETTINGS = ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "MPLCONFIGDIR")
KEPT = ("BP_TEST_MNIST",)  # the tests' own setting: where the real MNIST is


@pytest.fixture(scope="session", autouse=True)
def away_from_the_users_files(tmp_path_factory):
    """The suite's own home, working folder, runs root and data dir, set before any other
    fixture of any scope runs (a session fixture, autouse: pytest sets those up first), and
    no BP_* setting of the user's: a test, a fixture or a process they start reads and
    writes only these (``./runs`` and ``./data`` then mean folders in the suite's own
    working folder)."""
    top = tmp_path_factory.mktemp("user")
    patch = pytest.MonkeyPatch()
    for name in [n for n in os.environ if n.startswith("BP_") and n not in KEPT]:
        patch.delenv(name)
    for name in USER_SETTINGS:
        folder = top / name.lower()
        folder.mkdir()
        patch.setenv(name, str(folder))
    patch.setenv("BP_RUNS_DIR", str(top / "runs"))
    patch.setenv("BP_DATA_DIR", str(top / "data"))
    (top / "cwd").mkdir()
    patch.chdir(top / "cwd")
    yield top
    patch.undo()


def pytest_sessionstart(session):
    session.config.stash[_BEFORE] = {folder: snapshot(folder) for folder in USERS_FOLDERS}


def pytest_sessionfinish(session, exitstatus):
    """The whole suite left the checkout's runs/ and data/ byte for byte as it found them."""
    before = session.config.stash.get(_BEFORE, None)
    if before is None:
        return
    found = [f"{folder}: {change}" for folder in USERS_FOLDERS for change in changes(before[folder], snapshot(folder))]
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["the tests changed the user's files (tests must use the suite's own folders):", *found[:20]]
        for line in lines:
            (reporter.write_line if reporter else print)(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_BEFORE = pytest.StashKey[dict]()


@pytest.fixture(autouse=True)
def runs_root(tmp_path, monkeypatch):
    """Every test gets a runs root of its own ($BP_RUNS_DIR): no test writes ./runs/latest."""
    root = tmp_path / "runs-root"
    monkeypatch.setenv("BP_RUNS_DIR", str(root))
    return root


@pytest.fixture
def tiny_mnist():
    """``(contents, specs)`` of four tiny valid MNIST files (6 train, 4 test examples)."""
    return make_tiny_mnist()


class MirrorServer:
    """A loopback HTTP server serving ``files`` (url path -> bytes), with per-path misbehaviour.

    ``behaviour[path]`` is one of the names below, or a list of them used one
    request at a time (the last one sticks), e.g. ``["500", "ok"]``:
      ok         serve the bytes
      404 / 500  that status
      garbage    200 with random bytes
      html       200 with an HTML error page
      truncated  200 with the first half of the bytes (and a matching length)
      wrong      200 with a valid gzip of different IDX content (checksum fails)
      slow       wait ``slow_seconds`` before answering (to trip a read timeout)
      reset      promise the full length, send half, close the connection
      encoded    send the gzip bytes with ``Content-Encoding: gzip``
      trickle    send the first half, then hang until the server closes (a download to kill)
      silent     read the request, never answer (until the server closes)
      stall      same as trickle: half the body, then nothing, the socket kept open
      trickle10  send the body 10 bytes per ``tick`` (s), over and over, until the server closes
      endless    a gzip header whose comment never ends, ``tick_bytes`` per tick (fast, yet no data)
    ``hits`` counts requests per path; ``delay`` (s) slows every answer. Every
    hanging answer ends when the server closes, so no test leaves a thread behind.
    """

    def __init__(self):
        self.files = {}
        self.behaviour = {}
        self.hits = collections.Counter()
        self.delay = 0.0
        self.slow_seconds = 3.0
        self.tick = 0.05
        self.tick_bytes = 4096
        self._stop = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner._handle(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # Clients that time out or give up on purpose make the server's writes fail: not news.
        self.httpd.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def add_gz(self, contents):
        """Serve each ``{name: idx bytes}`` as ``/<name>.gz``."""
        for name, raw in contents.items():
            self.files[f"/{name}.gz"] = gzip.compress(raw)

    def add_dir(self, folder):
        for path in Path(folder).iterdir():
            if path.is_file():
                self.files["/" + path.name] = path.read_bytes()

    def _next_behaviour(self, path):
        with self._lock:
            self.hits[path] += 1
            todo = self.behaviour.get(path, "ok")
            if isinstance(todo, list):
                return todo.pop(0) if len(todo) > 1 else todo[0]
            return todo

    def _send(self, handler, status, body, headers=()):
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in headers:
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler):
        path = handler.path
        todo = self._next_behaviour(path)
        if self.delay:
            self._stop.wait(self.delay)
        body = self.files.get(path)
        if todo == "404" or (body is None and todo == "ok"):
            return self._send(handler, 404, b"not found")
        if todo == "500":
            return self._send(handler, 500, b"oops")
        if todo == "garbage":
            return self._send(handler, 200, np.random.default_rng(1).bytes(5000))
        if todo == "html":
            return self._send(handler, 200, b"<!DOCTYPE html><html><body>Sign in to the Wi-Fi</body></html>")
        if todo == "truncated":
            return self._send(handler, 200, body[: len(body) // 2])
        if todo == "wrong":
            raw = bytearray(gzip.decompress(body))
            raw[-1] ^= 0xFF
            return self._send(handler, 200, gzip.compress(bytes(raw)))
        if todo == "slow":
            self._stop.wait(self.slow_seconds)
            return self._send(handler, 200, body)
        if todo == "silent":
            self._stop.wait()
            return None
        if todo in ("trickle10", "endless"):
            # No Content-Length: the body runs until the connection closes, i.e. never.
            handler.close_connection = True
            handler.send_response(200)
            handler.end_headers()
            if todo == "trickle10":
                pieces = (body[i:i + 10] for i in itertools.cycle(range(0, len(body), 10)))
            else:
                # gzip magic, deflate, FLG.FCOMMENT, then a comment that never reaches its NUL
                handler.wfile.write(b"\x1f\x8b\x08\x10" + bytes(6))
                pieces = itertools.repeat(b"x" * self.tick_bytes)
            for piece in pieces:
                handler.wfile.write(piece)
                handler.wfile.flush()
                if self._stop.wait(self.tick):
                    return None
        if todo in ("reset", "trickle", "stall"):  # promise the full length, send half, then ...
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            if todo == "reset":  # ... drop the connection
                handler.close_connection = True
                handler.connection.shutdown(socket.SHUT_RDWR)
            else:  # ... hang until the server closes
                self._stop.wait()
            return None
        if todo == "encoded":
            return self._send(handler, 200, body, [("Content-Encoding", "gzip")])
        return self._send(handler, 200, body)

    def close(self):
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def make_server():
    """Factory for ``MirrorServer``s, all shut down after the test."""
    servers = []

    def make():
        server = MirrorServer()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def tiny_server(make_server, tiny_mnist):
    """A mirror serving the four tiny files gzipped."""
    server = make_server()
    server.add_gz(tiny_mnist[0])
    return server


@pytest.fixture
def closed_port_url():
    """An http URL on 127.0.0.1 where nothing listens: connection refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def real_mnist_dir():
    """The folder of genuine gzipped MNIST files, or skip."""
    return real_mnist_folder() or pytest.skip(NO_MNIST)


@pytest.fixture(scope="session")
def mnist_data_dir(tmp_path_factory):
    """A data dir holding the verified, decompressed real MNIST (made once per session), or skip."""
    from bpcli.download import ensure_mnist

    folder = real_mnist_folder() or pytest.skip(NO_MNIST)
    data = tmp_path_factory.mktemp("mnist-cache")
    ensure_mnist(data, mirrors=[str(folder)], offline=True, progress=False)
    return data


@pytest.fixture
def no_internet(monkeypatch):
    """Any connection other than to loopback raises, so a test cannot reach the internet by mistake."""
    real_connect = socket.socket.connect

    def guarded(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and sock.family != getattr(socket, "AF_UNIX", None):
            raise OSError(f"test tried to reach {address!r}: tests stay on 127.0.0.1")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def clean_bp_env(monkeypatch):
    """No BP_* settings from the outer environment leak into a test."""
    for name in ("BP_MNIST_MIRROR", "BP_OFFLINE", "BP_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def small_disk(tmp_path):
    """A real file system that fills up: a 1 MiB tmpfs mounted for the test (as root), and
    ``leave(n)`` fills it until about ``n`` bytes are free. Skips where mounting is not
    permitted (not root, or no CAP_SYS_ADMIN in a container)."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill up ({result.stderr.strip() or 'not root'})")

    def leave(n):
        st = os.statvfs(mount)
        with open(mount / ".filler", "wb") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - n))

    try:
        yield mount, leave
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
