"""The downloader against loopback mirrors that fail in every way a real one can.

Tiny generated IDX files with their own hash table (``files=``) keep this
fast; one test fetches the genuine MNIST over 127.0.0.1 with the real table.
"""

import errno
import fcntl
import gzip
import json
import os
import tempfile
import subprocess
import re
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bpcli import download
from bpcli.cli import cli
from bpcli.download import MISSING, download_action, ensure_mnist, resolve_mirrors
from bpcli.errors import ConfigError, DataError

NAMES = list(download.MNIST_FILES)
FAST = {"backoff": (0, 0), "timeout": (2, 2), "progress": False}


@pytest.fixture(autouse=True)
def _hermetic(no_internet, clean_bp_env):
    """Every test here: loopback only, no BP_* settings from outside."""


class ExplodingSession:
    """A session that fails the test if anything tries to use the network through it."""

    def get(self, *args, **kwargs):
        raise AssertionError(f"unexpected request: {args}")


def leftovers(folder):
    """Anything in the data dir besides finished files, the lock and hand-dropped .gz files."""
    allowed = set(NAMES) | {".lock"}
    return sorted(p.name for p in Path(folder).iterdir() if p.name not in allowed and not p.name.endswith(".gz"))


def assert_cached(data_dir, contents):
    for name, raw in contents.items():
        assert (Path(data_dir) / name).read_bytes() == raw, name


def one_line(message):
    assert "\n" not in message, message
    return message


# --- pure decisions ------------------------------------------------------

@pytest.mark.parametrize("problem, force, action", [
    (None, False, "use"),
    (None, True, "refetch"),
    (MISSING, False, "fetch"),
    (MISSING, True, "fetch"),
    ("checksum mismatch", False, "refetch"),
    ("checksum mismatch", True, "refetch"),
])
def test_download_action_decides_like_pooch(problem, force, action):
    assert download_action(problem, force) == action


def test_mirrors_come_from_cli_then_env_then_builtin(monkeypatch):
    assert resolve_mirrors(()) == download.DEFAULT_MIRRORS
    monkeypatch.setenv("BP_MNIST_MIRROR", " http://a/ , /some/dir,, ")
    assert resolve_mirrors(()) == ["http://a/", "/some/dir"]
    assert resolve_mirrors(("file:///x", "https://b/mnist")) == ["file:///x", "https://b/mnist"]


def test_unsupported_mirror_scheme_is_a_usage_error():
    with pytest.raises(ConfigError, match="ftp://"):
        resolve_mirrors(("ftp://example.org/mnist/",))


def test_sizes_match_the_real_files():
    # the decompressed sizes of the genuine files: 16-byte header + 60000 * 28 * 28, 8 + 10000
    spec = download.MNIST_FILES["train-images-idx3-ubyte"]
    assert download.idx_size(spec) == 47040016
    assert download.idx_size(download.MNIST_FILES["t10k-labels-idx1-ubyte"]) == 10008


# --- happy paths ----------------------------------------------------------

def test_fetches_verifies_and_caches(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    data_dir = tmp_path / "new" / "data"      # created on demand
    paths = ensure_mnist(data_dir, mirrors=[tiny_server.url], files=specs, **FAST)
    assert paths == {name: str(data_dir / name) for name in specs}
    assert_cached(data_dir, contents)
    assert all(tiny_server.hits[f"/{name}.gz"] == 1 for name in specs)
    assert leftovers(data_dir) == []


def test_cached_rerun_makes_no_request(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    before = sum(tiny_server.hits.values())
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, session=ExplodingSession(), **FAST)
    assert sum(tiny_server.hits.values()) == before


def test_mirror_without_trailing_slash(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    sub = tiny_server.url + "mnist"
    tiny_server.files = {"/mnist" + path: body for path, body in tiny_server.files.items()}
    ensure_mnist(tmp_path, mirrors=[sub], files=specs, **FAST)
    assert_cached(tmp_path, contents)


def test_content_encoding_gzip_is_accepted(tmp_path, tiny_mnist, tiny_server):
    # Some CDNs serve .gz files with Content-Encoding: gzip; requests then decodes them.
    contents, specs = tiny_mnist
    for name in specs:
        tiny_server.behaviour[f"/{name}.gz"] = "encoded"
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    assert_cached(tmp_path, contents)


def test_dead_first_mirror_falls_through(tmp_path, tiny_mnist, tiny_server, closed_port_url):
    contents, specs = tiny_mnist
    t0 = time.monotonic()
    ensure_mnist(tmp_path, mirrors=[closed_port_url, tiny_server.url], files=specs, **FAST)
    assert_cached(tmp_path, contents)
    assert time.monotonic() - t0 < 5


def test_transient_500_is_retried_on_the_same_mirror(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    path = f"/{NAMES[0]}.gz"
    tiny_server.behaviour[path] = ["500", "ok"]
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    assert tiny_server.hits[path] == 2
    assert_cached(tmp_path, contents)


def test_default_backoff_sleeps_half_then_one_second(tmp_path, tiny_mnist, tiny_server, monkeypatch):
    contents, specs = tiny_mnist
    sleeps = []
    monkeypatch.setattr(download.time, "sleep", sleeps.append)
    tiny_server.behaviour[f"/{NAMES[0]}.gz"] = ["500", "500", "ok"]
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, progress=False)
    assert sleeps == list(download.DEFAULT_BACKOFF) == [0.5, 1.0]


# --- every way a mirror can fail ---------------------------------------------

# behaviour served for every file -> (words in the reason, requests for the first file,
# requests for the whole command). A failure about one file leaves the mirror in use for
# the others (one request per file); one that may pass is retried twice, then the mirror
# is given up; one that cost a timeout gives the mirror up at once.
FAILURES = {
    "404": ("HTTP 404", 1, 4),
    "500": ("HTTP 500", 3, 3),
    "garbage": ("not gzip or IDX", 1, 4),
    "html": ("HTML page", 1, 4),
    "truncated": ("truncated gzip", 1, 4),
    "wrong": ("checksum mismatch", 1, 4),
    "reset": ("connection", 3, 3),
    "slow": ("no answer within 0.3 s", 1, 1),
}


def _break_all(server, specs, behaviour):
    for name in specs:
        server.behaviour[f"/{name}.gz"] = behaviour
    server.slow_seconds = 2


@pytest.mark.parametrize("behaviour", list(FAILURES))
def test_bad_mirror_is_skipped_for_a_good_one(tmp_path, tiny_mnist, tiny_server, make_server, behaviour):
    contents, specs = tiny_mnist
    bad = make_server()
    bad.add_gz(contents)
    _break_all(bad, specs, behaviour)
    ensure_mnist(tmp_path, mirrors=[bad.url, tiny_server.url], files=specs,
                 backoff=(0, 0), timeout=(2, 0.3), progress=False)
    assert_cached(tmp_path, contents)
    assert bad.hits[f"/{NAMES[0]}.gz"] == FAILURES[behaviour][1]
    assert sum(bad.hits.values()) == FAILURES[behaviour][2], bad.hits
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("behaviour", list(FAILURES))
def test_only_a_bad_mirror_gives_one_line_naming_it(tmp_path, tiny_mnist, make_server, behaviour):
    contents, specs = tiny_mnist
    bad = make_server()
    bad.add_gz(contents)
    _break_all(bad, specs, behaviour)
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, mirrors=[bad.url], files=specs, backoff=(0, 0), timeout=(2, 0.3), progress=False)
    message = one_line(str(info.value))
    assert NAMES[0] in message and bad.url in message and FAILURES[behaviour][0] in message
    assert "--mirror" in message
    assert leftovers(tmp_path) == []
    assert not any((tmp_path / name).exists() for name in specs)


def test_error_lists_every_mirror_with_its_reason(tmp_path, tiny_mnist, make_server, closed_port_url):
    contents, specs = tiny_mnist
    empty = make_server()           # answers 404 to everything
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, mirrors=[closed_port_url, empty.url, str(tmp_path / "nowhere")], files=specs, **FAST)
    message = one_line(str(info.value))
    assert f"{closed_port_url} (connection refused)" in message
    assert f"{empty.url} (HTTP 404" in message
    assert "nowhere (no such directory)" in message


def test_unreachable_mirror_is_not_retried_for_every_file(tmp_path, tiny_mnist, make_server, tiny_server):
    contents, specs = tiny_mnist
    slow = make_server()
    slow.add_gz(contents)
    _break_all(slow, specs, "slow")
    ensure_mnist(tmp_path, mirrors=[slow.url, tiny_server.url], files=specs,
                 backoff=(0, 0), timeout=(2, 0.3), progress=False)
    assert sum(slow.hits.values()) == 1        # one timeout, not one per try and file


# --- mirrors that hang ---------------------------------------------------------------

# Tiny limits: a silence of 0.5 s, 5 KB/s after 0.5 s of body, 1 s per file. The tiny
# files come over loopback in milliseconds, far inside all of them.
HANG_LIMITS = {"timeout": (2, 0.5), "min_speed": 5_000, "speed_grace": 0.5, "deadline": 1, "backoff": (0, 0)}
HANG_GUARD = 30     # s: only code that hangs gets anywhere near this

# behaviour served for every file -> the reason the mirror is given up
HANGS = {
    "silent": "no answer within 0.5 s",
    "stall": "stalled: no data for 0.5 s",
    "trickle10": "too slow: ",
    "endless": "not done after 1 s",
}


def fetch_or_hang(*args, **kwargs):
    """``ensure_mnist`` in a thread, failing the test if it is still running after HANG_GUARD s."""
    outcome = {}

    def run():
        try:
            outcome["paths"] = ensure_mnist(*args, **kwargs)
        except Exception as err:        # handed to the test below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    if thread.is_alive():
        pytest.fail(f"ensure_mnist still running after {HANG_GUARD} s: the download hangs")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["paths"]


def hanging_server(make_server, contents, behaviour):
    server = make_server()
    server.add_gz(contents)
    for name in contents:
        server.behaviour[f"/{name}.gz"] = behaviour
    return server


@pytest.mark.parametrize("behaviour", list(HANGS))
def test_hanging_mirror_is_given_up_after_one_request(tmp_path, tiny_mnist, tiny_server, make_server,
                                                      behaviour, capsys):
    contents, specs = tiny_mnist
    bad = hanging_server(make_server, contents, behaviour)
    fetch_or_hang(tmp_path, mirrors=[bad.url, tiny_server.url], files=specs, progress=None, **HANG_LIMITS)
    assert_cached(tmp_path, contents)                       # the second mirror delivered every file
    assert all(tiny_server.hits[f"/{name}.gz"] == 1 for name in specs)
    assert sum(bad.hits.values()) == 1, bad.hits           # given up after its first failure
    assert leftovers(tmp_path) == []
    notes = capsys.readouterr().err
    assert f"{bad.url} failed ({HANGS[behaviour]}" in notes and "not using it for the other files" in notes


@pytest.mark.parametrize("behaviour", list(HANGS))
def test_only_a_hanging_mirror_gives_one_line_naming_why(tmp_path, tiny_mnist, make_server, behaviour):
    contents, specs = tiny_mnist
    bad = hanging_server(make_server, contents, behaviour)
    with pytest.raises(DataError) as info:
        fetch_or_hang(tmp_path, mirrors=[bad.url], files=specs, progress=False, **HANG_LIMITS)
    message = one_line(str(info.value))
    assert f"could not fetch {NAMES[0]}" in message and f"{bad.url} ({HANGS[behaviour]}" in message
    assert sum(bad.hits.values()) == 1, bad.hits
    assert leftovers(tmp_path) == []
    assert not any((tmp_path / name).exists() for name in specs)


def test_too_slow_says_how_slow(tmp_path, tiny_mnist, make_server):
    contents, specs = tiny_mnist
    bad = hanging_server(make_server, contents, "trickle10")      # 10 bytes per 0.05 s: ~200 B/s
    with pytest.raises(DataError) as info:
        fetch_or_hang(tmp_path, mirrors=[bad.url], files=specs, progress=False, **HANG_LIMITS)
    assert re.search(r"\(too slow: \d+ B/s after [0-9.]+ s\)", str(info.value)), str(info.value)


def test_error_names_every_hanging_mirror_and_why(tmp_path, tiny_mnist, make_server):
    contents, specs = tiny_mnist
    servers = {behaviour: hanging_server(make_server, contents, behaviour) for behaviour in HANGS}
    empty = make_server()           # 404 for everything
    with pytest.raises(DataError) as info:
        fetch_or_hang(tmp_path, mirrors=[s.url for s in servers.values()] + [empty.url], files=specs,
                      progress=False, **HANG_LIMITS)
    message = one_line(str(info.value))
    for behaviour, server in servers.items():
        assert f"{server.url} ({HANGS[behaviour]}" in message
    assert f"{empty.url} (HTTP 404" in message and "--mirror" in message
    assert leftovers(tmp_path) == []


def test_a_hanging_mirror_is_given_up_for_the_later_files_too(tmp_path, tiny_mnist, make_server, tiny_server):
    # It hangs only on the second file: the third and fourth must not ask it again.
    contents, specs = tiny_mnist
    bad = make_server()
    bad.add_gz(contents)
    bad.behaviour[f"/{NAMES[1]}.gz"] = "stall"
    fetch_or_hang(tmp_path, mirrors=[bad.url, tiny_server.url], files=specs, progress=False, **HANG_LIMITS)
    assert_cached(tmp_path, contents)
    assert [bad.hits[f"/{name}.gz"] for name in NAMES] == [1, 1, 0, 0]
    assert [tiny_server.hits[f"/{name}.gz"] for name in NAMES] == [0, 1, 1, 1]


def test_a_mirror_that_gives_up_late_says_so_for_each_file(tmp_path, tiny_mnist, make_server):
    contents, specs = tiny_mnist
    bad = make_server()
    bad.add_gz(contents)
    bad.behaviour[f"/{NAMES[1]}.gz"] = "silent"
    good_for_two = make_server()
    good_for_two.add_gz({name: contents[name] for name in NAMES[:2]})
    with pytest.raises(DataError) as info:
        fetch_or_hang(tmp_path, mirrors=[bad.url, good_for_two.url], files=specs, progress=False, **HANG_LIMITS)
    message = one_line(str(info.value))
    assert f"could not fetch {NAMES[2]}" in message
    assert f"{bad.url} (given up earlier: no answer within 0.5 s)" in message
    assert f"{good_for_two.url} (HTTP 404" in message
    assert sum(bad.hits.values()) == 2 and leftovers(tmp_path) == []


@pytest.fixture
def unanswered_port_url():
    """An http URL on 127.0.0.1 whose listen queue is full: a connection attempt gets no answer."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = []
    while True:                 # fill the queue until a connection attempt goes unanswered
        client = socket.socket()
        client.settimeout(0.5)
        try:
            client.connect(("127.0.0.1", port))
        except OSError:
            client.close()
            break
        queued.append(client)
        if len(queued) > 64:
            pytest.fail("the listen queue never filled")
    yield f"http://127.0.0.1:{port}/"
    for s in queued + [server]:
        s.close()


def test_no_connection_in_time_gives_the_mirror_up(tmp_path, tiny_mnist, tiny_server, unanswered_port_url, capsys):
    contents, specs = tiny_mnist
    limits = {**HANG_LIMITS, "timeout": (0.5, 0.5)}
    fetch_or_hang(tmp_path, mirrors=[unanswered_port_url, tiny_server.url], files=specs, progress=None, **limits)
    assert_cached(tmp_path, contents)
    notes = capsys.readouterr().err
    assert notes.count(f"{unanswered_port_url} failed (no connection within 0.5 s)") == 1, notes


# --- the cache ------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["flip", "truncate", "extend"])
def test_corrupted_cache_is_fetched_again(tmp_path, tiny_mnist, tiny_server, damage):
    contents, specs = tiny_mnist
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    victim = tmp_path / NAMES[2]
    raw = bytearray(victim.read_bytes())
    if damage == "flip":
        raw[-1] ^= 1            # same size: only the hash can tell
    elif damage == "truncate":
        del raw[-10:]
    else:
        raw += b"\0"
    victim.write_bytes(bytes(raw))
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    assert_cached(tmp_path, contents)
    assert tiny_server.hits[f"/{NAMES[2]}.gz"] == 2
    assert all(tiny_server.hits[f"/{name}.gz"] == 1 for name in NAMES if name != NAMES[2])


def test_force_fetches_valid_files_again(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, force=True, **FAST)
    assert all(tiny_server.hits[f"/{name}.gz"] == 2 for name in specs)
    assert_cached(tmp_path, contents)


def test_failed_refetch_keeps_nothing_half_written(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    _break_all(tiny_server, specs, "truncated")
    with pytest.raises(DataError):
        ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, force=True, **FAST)
    assert_cached(tmp_path, contents)           # the good files are still there
    assert leftovers(tmp_path) == []


def test_stale_partial_files_are_cleaned_up(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    stale = tmp_path / f".{NAMES[0]}.x1y2z3.part"
    stale.write_bytes(b"half a download from a killed run")
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    assert not stale.exists()
    assert leftovers(tmp_path) == []


# --- offline and local mirrors -----------------------------------------------------

@pytest.fixture
def no_sockets(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("offline code opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_offline_with_files_missing_says_which(tmp_path, tiny_mnist, tiny_server, no_sockets):
    contents, specs = tiny_mnist
    (tmp_path / NAMES[1]).write_bytes(contents[NAMES[1]])
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, mirrors=[tiny_server.url], offline=True, files=specs,
                     session=ExplodingSession(), **FAST)
    message = one_line(str(info.value))
    assert "offline" in message and "--offline" in message
    assert all(name in message for name in NAMES if name != NAMES[1])
    assert NAMES[1] not in message
    assert sum(tiny_server.hits.values()) == 0


def test_offline_with_default_mirrors_opens_no_socket(tmp_path, no_sockets):
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        ensure_mnist(tmp_path / "data", offline=True, progress=False)
    assert not (tmp_path / "data").exists()


def test_offline_reports_a_corrupt_cache(tmp_path, tiny_mnist, tiny_server, no_sockets):
    contents, specs = tiny_mnist
    for name, raw in contents.items():
        (tmp_path / name).write_bytes(raw)
    (tmp_path / NAMES[0]).write_bytes(contents[NAMES[0]][:-1] + b"\xff")
    with pytest.raises(DataError, match=f"bad {NAMES[0]} \\(checksum mismatch\\)"):
        ensure_mnist(tmp_path, mirrors=[tiny_server.url], offline=True, files=specs, **FAST)


def test_force_offline_without_a_local_mirror(tmp_path, tiny_mnist, no_sockets):
    contents, specs = tiny_mnist
    for name, raw in contents.items():
        (tmp_path / name).write_bytes(raw)
    with pytest.raises(DataError, match="--force with --offline needs a local --mirror DIR"):
        ensure_mnist(tmp_path, offline=True, force=True, files=specs, **FAST)


def test_offline_with_a_valid_cache_works(tmp_path, tiny_mnist, no_sockets):
    contents, specs = tiny_mnist
    for name, raw in contents.items():
        (tmp_path / name).write_bytes(raw)
    paths = ensure_mnist(tmp_path, offline=True, files=specs, session=ExplodingSession(), progress=False)
    assert set(paths) == set(specs)


@pytest.mark.parametrize("layout", ["gz", "plain", "file-url"])
def test_local_directory_mirror(tmp_path, tiny_mnist, layout):
    contents, specs = tiny_mnist
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, raw in contents.items():
        if layout == "plain":
            (mirror / name).write_bytes(raw)
        else:
            (mirror / f"{name}.gz").write_bytes(gzip.compress(raw))
    where = mirror.as_uri() if layout == "file-url" else str(mirror)
    ensure_mnist(tmp_path / "data", mirrors=[where], files=specs, session=ExplodingSession(), **FAST)
    assert_cached(tmp_path / "data", contents)


def test_offline_still_uses_a_local_directory_mirror(tmp_path, tiny_mnist, tiny_server, no_sockets):
    contents, specs = tiny_mnist
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, raw in contents.items():
        (mirror / f"{name}.gz").write_bytes(gzip.compress(raw))
    ensure_mnist(tmp_path / "data", mirrors=[tiny_server.url, str(mirror)], offline=True, files=specs, **FAST)
    assert_cached(tmp_path / "data", contents)
    assert sum(tiny_server.hits.values()) == 0


def test_gz_files_dropped_into_the_data_dir_are_used(tmp_path, tiny_mnist, closed_port_url):
    contents, specs = tiny_mnist
    for name, raw in contents.items():
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(raw))
    ensure_mnist(tmp_path, mirrors=[closed_port_url], files=specs, **FAST)
    assert_cached(tmp_path, contents)


# --- the data dir: errors and locking ------------------------------------------------

def test_disk_full_is_a_clean_error(tmp_path, tiny_mnist, tiny_server, monkeypatch):
    contents, specs = tiny_mnist

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return FullDisk(f) if str(path).endswith(".part") and "w" in mode else f

    monkeypatch.setattr(download, "open", fake_open, raising=False)
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    message = one_line(str(info.value))
    assert "cannot write" in message and "No space left on device" in message
    assert leftovers(tmp_path) == []
    assert not any((tmp_path / name).exists() for name in specs)


def test_read_only_data_dir_is_a_clean_error(tmp_path, tiny_mnist, tiny_server, monkeypatch):
    contents, specs = tiny_mnist
    if os.geteuid() == 0:
        # root writes through permission bits (CI runs as root): fail the way a
        # read-only file system does, at the first file bp creates there
        import errno

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
        monkeypatch.setattr(os, "open", read_only)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(DataError, match="cannot write|Read-only"):
            ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, **FAST)
    finally:
        tmp_path.chmod(0o755)
    assert list(tmp_path.iterdir()) == []


def test_data_dir_that_is_a_file(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(DataError, match="not a directory"):
        ensure_mnist(tmp_path / "data", mirrors=[tiny_server.url], files=specs, **FAST)


def test_lock_held_too_long_is_an_error(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    with open(tmp_path / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DataError, match="another process has held"):
            ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=specs, lock_timeout=0.3, **FAST)
    assert sum(tiny_server.hits.values()) == 0


CHILD = """
import json, sys
from bpcli import download
specs = {k: download.FileSpec(*v) for k, v in json.loads(sys.argv[1]).items()}
download.ensure_mnist(sys.argv[2], mirrors=[sys.argv[3]], files=specs, backoff=(0, 0))
print("requests" in sys.modules)
"""


def test_parallel_processes_fetch_each_file_once(tmp_path, tiny_mnist, tiny_server):
    contents, specs = tiny_mnist
    tiny_server.delay = 0.2         # keep the first process busy while the others start
    argv = [sys.executable, "-c", CHILD, json.dumps(specs), str(tmp_path), tiny_server.url]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=60) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0] * 4, results
    assert all(tiny_server.hits[f"/{name}.gz"] == 1 for name in specs), tiny_server.hits
    assert_cached(tmp_path, contents)
    assert leftovers(tmp_path) == []
    # A warm cache never imports requests.
    again = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "False", again


# --- progress on stderr ------------------------------------------------------------

def test_progress_false_is_silent(tmp_path, tiny_mnist, tiny_server, capsys):
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=tiny_mnist[1], **FAST)
    assert capsys.readouterr() == ("", "")


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path, tiny_mnist, tiny_server, capsys):
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=tiny_mnist[1], backoff=(0, 0))
    out, err = capsys.readouterr()
    assert out == ""
    assert "%|" not in err and "\r" not in err      # no tqdm bar in a CI log
    assert len(err.splitlines()) == 4                  # one note per file


def test_bar_when_asked(tmp_path, tiny_mnist, tiny_server, capsys):
    ensure_mnist(tmp_path, mirrors=[tiny_server.url], files=tiny_mnist[1], backoff=(0, 0), progress=True)
    err = capsys.readouterr().err
    assert NAMES[0] in err and "%|" in err             # tqdm's own bar, not just the notes


# --- the CLI -------------------------------------------------------------------------

def error_lines(result):
    assert "Traceback" not in result.output
    return [line for line in result.output.splitlines() if line.startswith("Error:")]


def test_cli_download_succeeds(tmp_path, tiny_mnist, tiny_server, monkeypatch):
    contents, specs = tiny_mnist
    monkeypatch.setattr(download, "MNIST_FILES", specs)
    result = CliRunner().invoke(cli, ["download", "--mirror", tiny_server.url, "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{name}: {tmp_path / name}" for name in specs]
    assert_cached(tmp_path, contents)
    again = CliRunner().invoke(cli, ["download", "--offline", "--data-dir", str(tmp_path)])
    assert again.exit_code == 0, again.output


def test_cli_mirror_from_environment(tmp_path, tiny_mnist, tiny_server, monkeypatch):
    contents, specs = tiny_mnist
    monkeypatch.setattr(download, "MNIST_FILES", specs)
    monkeypatch.setattr(download.time, "sleep", lambda seconds: None)
    monkeypatch.setenv("BP_MNIST_MIRROR", f"http://127.0.0.1:1/,{tiny_server.url}")
    monkeypatch.setenv("BP_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["download"])
    assert result.exit_code == 0, result.output
    assert_cached(tmp_path, contents)


def test_cli_all_mirrors_failing_exits_1_with_one_error_line(tmp_path, closed_port_url, make_server, monkeypatch):
    monkeypatch.setattr(download.time, "sleep", lambda seconds: None)
    empty = make_server()
    result = CliRunner().invoke(cli, ["download", "--mirror", closed_port_url, "--mirror", empty.url,
                                      "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert "connection refused" in line and "HTTP 404" in line and "--mirror" in line
    assert leftovers(tmp_path) == []


def test_cli_offline_missing_exits_1(tmp_path, no_sockets, monkeypatch):
    monkeypatch.setenv("BP_OFFLINE", "1")
    result = CliRunner().invoke(cli, ["download", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert "offline" in line and all(name in line for name in NAMES)


def test_cli_bad_mirror_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["download", "--mirror", "ftp://x/", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert len(error_lines(result)) == 1


# --- the genuine MNIST over loopback -------------------------------------------------------

def test_real_mnist_over_loopback(tmp_path, real_mnist_dir, make_server):
    from bpcli.data import load_mnist

    server = make_server()
    server.add_dir(real_mnist_dir)
    mnist = load_mnist(tmp_path, mirrors=[server.url], progress=False)
    assert mnist.train_images.shape == (60000, 784) and mnist.train_images.dtype.name == "uint8"
    assert mnist.train_labels.shape == (60000,) and mnist.train_labels.dtype.name == "uint8"
    assert mnist.test_images.shape == (10000, 784) and mnist.test_labels.shape == (10000,)
    assert mnist.train_labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]     # the famous first digits
    assert mnist.test_labels[:4].tolist() == [7, 2, 1, 0]
    assert all(server.hits[f"/{name}.gz"] == 1 for name in NAMES)


def test_real_mnist_four_parallel_bp_downloads(tmp_path, real_mnist_dir, make_server):
    server = make_server()
    server.add_dir(real_mnist_dir)
    argv = [sys.executable, "-m", "bpcli.cli", "download", "--mirror", server.url, "--data-dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_")}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert [r[2] for r in results] == [0] * 4, results
    assert all(server.hits[f"/{name}.gz"] == 1 for name in NAMES), server.hits
    for out, err, _ in results:
        assert "Traceback" not in err
        assert [line.split(":")[0] for line in out.splitlines()] == NAMES
    assert leftovers(tmp_path) == []
