"""Fetch, verify and cache the four files of MNIST or a drop-in (``bpcli/datasets.py``):
the only module that talks to the network.

The cache holds the *decompressed* IDX files under their plain names
(``data/train-images-idx3-ubyte`` …), so loading them is one read and no
gunzip. A file is trusted only once the SHA-256 of its IDX bytes and its IDX
header check out: when it arrives, and again every time it is used, so a
cached file that has gone bad is fetched again rather than trained on.

How a file is pinned. MNIST's four files, and Fashion-MNIST's two label files,
by the SHA-256 of their decompressed IDX content: it holds whatever gzip
wrapper a mirror uses, and it is what gets checked again at every use. The
only published checksums of Fashion-MNIST's image files, and the only ones at
all for KMNIST (torchvision's; CODH publishes none), are MD5s of the .gz
files, and nobody here could compute the content's SHA-256 (the image files
are not on these machines; a hash copied from a stranger's repository and
never checked is no pin). So those files are pinned by the MD5 of the .gz:
it is taken over the bytes as they stream in, before gunzip, and a file that
does not arrive as exactly that .gz is refused, whatever its content. MD5 is
broken for collisions, not for second preimages: nobody can make a different
file with a published MD5, which is all a pin needs. Once a file has matched,
the SHA-256 of its content is written beside it (``NAME.sha256``) and the
cached file is checked against that at every use, as MNIST's are; a file
without that record was not verified by bp and is not used. Labels are
pinned by content wherever possible, because they were at hand.

A cached file that fails verification is moved aside to ``NAME.rejected``,
never deleted (it may be someone's other dataset put in the wrong folder);
only the newest rejected copy is kept, so a file that keeps going bad cannot
fill the disk.

How a file arrives (the model is pooch's ``core.py`` / ``downloaders.py``):

- mirrors are tried in order and any failure (no connection, timeout, HTTP
  error, bad gzip, wrong bytes) moves on to the next one; only when all of
  them have failed is there an error, one line naming every mirror and what
  went wrong with it;
- the bytes are gunzipped, checked and hashed while they stream into a temp
  file next to the final name, which is renamed into place only once the
  whole file is verified (``fsutil.atomic_path``);
- a lock file in the data dir makes parallel ``bp download`` runs (a CI
  matrix) wait for each other, so each file is fetched once;
- ``offline`` never opens a socket: only local-directory mirrors are used.

No download can hang. Every wait on a mirror is bounded:

- connecting: ``timeout[0]`` (10 s: a lost SYN is resent after 1, 3 and
  7 s, so a lossy path gets three retransmissions; a healthy CDN connects in
  well under a second);
- silence: ``timeout[1]`` (20 s) with no byte at all, before the answer or
  in the middle of the body ("stalled"); covers a slow first byte and several
  back-to-back TCP retransmissions, which is what a flaky network looks like;
- speed: once the body has flowed for ``speed_grace`` (10 s: TCP slow start
  is over by then even at 500 ms round trips), its average must stay above
  ``min_speed`` (20 KB/s). A server dripping bytes just often enough to dodge
  the silence timeout is dropped; a slow but honest link is not: at 20 KB/s
  the biggest file (9.7 MB) still arrives in about 8 minutes;
- in all: ``deadline`` (600 s) per file and mirror, above what the floor
  allows for an honest 9.7 MB transfer; it ends streams whose bytes arrive
  fast enough but never make progress (an endless gzip header).

The speed and the deadline are checked between reads, and a read returns
whatever has arrived (urllib3's ``read1``, urllib3 2.2 and later), so they
act within one silence timeout. With an older urllib3 a read waits for a
whole 64 KiB chunk and they act only per chunk. Outside these bounds: the
name lookup (the system resolver's own timeouts), a connect timeout paid
once per address a name resolves to, and the status line and headers, which
http.client reads with only the silence timeout and its own size limits.

What a failure says about the mirror decides what happens next:

- quick and maybe passing (HTTP 5xx, 408, 429, connection refused or reset,
  connection broken mid-transfer): retried on the same mirror after each
  ``backoff`` delay (0.5 s, then 1 s); if it still fails the mirror is given
  up for the rest of the command;
- slow (no connection in time, no answer, stalled, too slow, past the
  deadline): not retried, and the mirror is given up for the rest of the
  command at once: it has already cost a timeout, the next mirror is the
  better bet, and paying the same timeout again for each file (3 tries x 4
  files) is what made a stalled mirror cost minutes;
- about this one file (HTTP 404 or another 4xx, an HTML page, bad gzip,
  wrong IDX header, wrong length, checksum mismatch): the next mirror is
  tried for this file, but the mirror stays in use for the other files.
  Mirrors really do differ file by file, and such a failure comes back
  quickly, so trying the mirror again for the next file costs one request.

A given-up mirror shows in the error as "(given up earlier: <why>)".

``requests`` and ``tqdm`` are imported only when a download actually starts;
a warm cache costs one SHA-256 pass over each file (about 50 ms for all 55 MB
with SHA extensions, a few hundred without), so nothing is trusted on the
strength of a timestamp.
"""

import contextlib
import errno
import functools
import hashlib
import os
import re
import stat
import sys
import time
import zlib
from typing import NamedTuple

from . import __version__, datasets, fsutil, idx
from .datasets import FileSpec  # noqa: F401 (part of this module's interface)
from .errors import BpError, ConfigError, DataError


# The pins and mirrors live in the datasets table; MNIST's keep their old names here.
MNIST_FILES = datasets.DATASETS["mnist"].files
DEFAULT_MIRRORS = list(datasets.DATASETS["mnist"].mirrors)


def files_of(dataset):
    """``{name: FileSpec}`` of a dataset (a name or a Dataset): for MNIST, ``MNIST_FILES``,
    which tests swap for tiny files."""
    ds = datasets.get(dataset) if isinstance(dataset, str) or dataset is None else dataset
    return MNIST_FILES if ds.name == "mnist" else ds.files

ROWS, COLS, IDX_MAGIC = idx.ROWS, idx.COLS, idx.MAGIC
MISSING = "missing"

# How long a mirror may take; the module docstring says why these numbers.
DEFAULT_TIMEOUT = (10, 20)      # seconds: (connect, silence: no byte at all for this long)
DEFAULT_MIN_SPEED = 20_000      # bytes/s a body must average once it has flowed for...
DEFAULT_SPEED_GRACE = 10        # ...this many seconds
DEFAULT_DEADLINE = 600          # seconds for one file from one mirror, all told
DEFAULT_BACKOFF = (0.5, 1.0)    # sleep before each retry of a quick failure; its length is the number of retries
LOCK_TIMEOUT = 600              # seconds to wait for another bp download in the same dir
CHUNK = 1 << 16


# ---------------------------------------------------------------------------
# What a good file looks like

def idx_header(spec):
    """The exact IDX header a file matching ``spec`` starts with (big-endian uint32s)."""
    return idx.header(spec.kind, spec.count)


def idx_size(spec):
    """The exact length in bytes of a file matching ``spec``."""
    return idx.file_size(spec.kind, spec.count)


def _header_problem(head, spec, what="IDX"):
    """Why ``head`` (the first bytes seen so far) cannot start a file matching ``spec``, or None."""
    expected = idx_header(spec)
    if expected.startswith(head[: len(expected)]):
        return None
    if head.lstrip()[:1] == b"<":
        # A captive portal or an error page served with status 200.
        return "got an HTML page, not IDX data"
    if len(head) >= len(expected) and head[:4] == expected[:4]:
        got, want = idx.header_dims(head[: len(expected)]), idx.header_dims(expected)
        return f"IDX header says {' x '.join(map(str, got))} {spec.kind}, expected {' x '.join(map(str, want))}"
    return f"not {what} {spec.kind} data (starts with {head[:8].hex()})"


# What a failure says about the mirror (the module docstring has the rules):
THIS_FILE = "this file"     # only this file is bad there: keep the mirror for the others
RETRY = "retry"             # may pass: retry after a back-off, then give the mirror up
GIVE_UP = "give up"         # it cost a timeout: give the mirror up for the rest of the command


class _Failed(Exception):
    """One mirror failed for one file; ``verdict`` (THIS_FILE, RETRY, GIVE_UP) is what that says about the mirror."""

    def __init__(self, reason, verdict=THIS_FILE):
        super().__init__(reason)
        self.reason = reason
        self.verdict = verdict


class _Verifier:
    """Checks IDX bytes as they stream by: header first, then length, then SHA-256.

    Checking the header and the length as the bytes arrive lets a wrong or
    endless download stop early instead of filling the disk.
    """

    def __init__(self, spec):
        self.spec = spec
        self.header_len = len(idx_header(spec))
        self.expected_size = idx_size(spec)
        self.what = "IDX"
        self.head = b""
        self.size = 0
        self.sha = hashlib.sha256()

    def update(self, data):
        if not data:
            return
        if len(self.head) < self.header_len:
            self.head += data[: self.header_len - len(self.head)]
            problem = _header_problem(self.head, self.spec, self.what)
            if problem:
                raise _Failed(problem)
        if self.size + len(data) > self.expected_size:
            raise _Failed(f"longer than the expected {self.expected_size} bytes")
        self.sha.update(data)
        self.size += len(data)

    def finish(self, sha256=None):
        """Check the whole file against ``spec.sha256``, else ``sha256`` (a record, see
        ``recorded_sha256``); with neither, only the structure. Returns the SHA-256 seen."""
        if self.size == 0:
            raise _Failed("empty")
        if self.size < self.expected_size:
            raise _Failed(f"truncated ({self.size} of {self.expected_size} bytes)")
        digest = self.sha.hexdigest()
        expected = self.spec.sha256 or sha256
        if expected is not None and digest != expected:
            raise _Failed("checksum mismatch")
        return digest


class _Gunzip:
    """Stream-decode bytes that may or may not be gzipped.

    Mirrors serve ``.gz`` files, but a server may also send them with
    ``Content-Encoding: gzip`` (requests then hands over plain bytes) and a
    local mirror may hold plain IDX files: so sniff the gzip magic instead of
    trusting the name, and let the IDX checks catch anything else.
    """

    def __init__(self):
        self.gzipped = None          # unknown until two bytes have arrived
        self._pending = b""
        self._z = None

    def feed(self, data):
        if self.gzipped is None:
            self._pending += data
            if len(self._pending) < 2:
                return b""
            data, self._pending = self._pending, b""
            self.gzipped = data[:2] == b"\x1f\x8b"
            if self.gzipped:
                self._z = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        if not self.gzipped:
            return data
        out = []
        while data:
            if self._z.eof:
                # Concatenated gzip members are still one valid gzip file.
                self._z = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                out.append(self._z.decompress(data))
            except zlib.error as err:
                raise _Failed(f"corrupt gzip ({err})") from None
            data = self._z.unused_data
        return b"".join(out)

    def finish(self):
        if self.gzipped is None:
            return self._pending
        if self.gzipped and not self._z.eof:
            raise _Failed("truncated gzip")
        return b""


RECORD = ".sha256"     # next to a file pinned by its .gz's MD5: the SHA-256 of the IDX that passed


def record_path(path):
    return os.fspath(path) + RECORD


def recorded_sha256(path):
    """The content SHA-256 recorded when the file at ``path`` arrived and its .gz's MD5 matched, or None."""
    try:
        f, _ = fsutil.open_untrusted(record_path(path), "checksum record", BpError, max_bytes=4096)
        with f:
            words = f.read(4096).decode("ascii", "replace").split()
    except (BpError, OSError):
        return None
    if words and re.fullmatch(r"[0-9a-f]{64}", words[0]):
        return words[0]
    return None


def cache_problem(path, spec):
    """Why the cached file at ``path`` cannot be used, or None if it is valid.

    Returns ``MISSING`` when there is no file. The size is checked first
    (free), then header and SHA-256 over the whole file: against the pinned
    one, or for a file pinned by its .gz's MD5, against the record written
    when that MD5 matched (no record: not verified, so not used).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return MISSING
    except OSError as err:
        return f"unreadable: {err.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size != idx_size(spec):
        return f"wrong size ({st.st_size} bytes, expected {idx_size(spec)})"
    recorded = None
    if spec.sha256 is None:
        recorded = recorded_sha256(path)
        if recorded is None:
            return (f"not verified: it is pinned by the MD5 of its publisher's .gz, and no {RECORD} "
                    "record says that matched")
    verifier = _Verifier(spec)
    try:
        with open(path, "rb") as f:
            for block in iter(functools.partial(f.read, 1 << 20), b""):
                verifier.update(block)
        verifier.finish(recorded)
    except OSError as err:
        return f"unreadable: {err.strerror}"
    except _Failed as err:
        return err.reason
    return None


def download_action(problem, force=False):
    """Decide what to do with one cached file, like pooch's ``download_action``.

    ``problem`` is what ``cache_problem`` said: None for a valid file,
    ``MISSING``, or why the cached copy is bad. Returns "use", "fetch" (not
    there yet) or "refetch" (bad, or ``force``).
    """
    if problem == MISSING:
        return "fetch"
    if problem is not None or force:
        return "refetch"
    return "use"


# ---------------------------------------------------------------------------
# Mirrors

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _parse_mirror(mirror):
    """``("url", base)`` or ``("dir", path)`` for one mirror; ConfigError if it is neither."""
    match = _SCHEME.match(mirror)
    if not match:
        return "dir", os.path.expanduser(mirror)
    scheme = match.group(1).lower()
    if scheme in ("http", "https"):
        return "url", mirror
    if scheme == "file":
        from urllib.parse import urlsplit
        from urllib.request import url2pathname

        return "dir", url2pathname(urlsplit(mirror).path)
    raise ConfigError(f"unsupported mirror {mirror!r}: give an http(s):// URL, a file:// URL or a local directory")


def resolve_mirrors(cli_mirrors=(), dataset="mnist"):
    """The mirrors to try, in order: ``--mirror`` values, else the dataset's variable
    (``$BP_MNIST_MIRROR``, ``$BP_FASHION_MNIST_MIRROR``, ``$BP_KMNIST_MIRROR``;
    comma-separated), else its built-in list.

    Raises ConfigError (a usage error) for a mirror that is neither an
    http(s)/file URL nor a directory path.
    """
    ds = datasets.get(dataset)
    mirrors = [m.strip() for m in cli_mirrors or () if m.strip()]
    if not mirrors:
        mirrors = [m.strip() for m in os.environ.get(ds.mirror_env, "").split(",") if m.strip()]
    if not mirrors:
        mirrors = list(ds.mirrors)
    for mirror in mirrors:
        _parse_mirror(mirror)
    return mirrors


def _url_for(base, name):
    # Not urljoin: it would drop the last path part of a base given without "/".
    return base.rstrip("/") + "/" + name + ".gz"


def _short_reason(err):
    """A few words for a requests or urllib3 exception; its str() is a paragraph."""
    import requests
    import urllib3

    if isinstance(err, (requests.exceptions.SSLError, urllib3.exceptions.SSLError)):
        return "TLS/certificate error (behind a proxy? set REQUESTS_CA_BUNDLE)"
    if isinstance(err, requests.exceptions.ProxyError):
        return "proxy error (check HTTPS_PROXY / HTTP_PROXY)"
    if isinstance(err, requests.Timeout):
        return "timed out"
    text = str(err)
    for needle, short in (
        ("Connection refused", "connection refused"),
        ("Name or service not known", "host not found"),
        ("nodename nor servname", "host not found"),
        ("Temporary failure in name resolution", "host not found"),
        ("getaddrinfo failed", "host not found"),
        ("Network is unreachable", "network unreachable"),
        ("Connection reset", "connection reset"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            return short
    if isinstance(err, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        return "connection broken mid-transfer"
    if isinstance(err, requests.ConnectionError):
        return "connection failed"
    return type(err).__name__


class _Limits(NamedTuple):
    """How long one file may take from one URL mirror (see the module docstring)."""

    timeout: tuple          # (connect, silence) in seconds, requests' ``timeout=``
    min_speed: float        # bytes/s
    speed_grace: float      # seconds of body before min_speed applies
    deadline: float         # seconds, from the request to the last byte


def _secs(seconds):
    return f"{round(seconds, 1):g} s"


def _speed(rate):
    for unit, size in (("MB/s", 1e6), ("KB/s", 1e3)):
        if rate >= size:
            return f"{rate / size:.3g} {unit}"
    return f"{rate:.0f} B/s"


def _http_chunks(get_session, url, limits):
    """Yield the body of ``url`` within ``limits``; failures come out as ``_Failed`` with a short reason."""
    import requests

    start = time.monotonic()
    try:
        resp = get_session().get(url, stream=True, timeout=limits.timeout)
    except requests.ConnectTimeout:
        raise _Failed(f"no connection within {_secs(limits.timeout[0])}", GIVE_UP) from None
    except requests.ReadTimeout:
        raise _Failed(f"no answer within {_secs(limits.timeout[1])}", GIVE_UP) from None
    except requests.RequestException as err:
        raise _Failed(_short_reason(err), RETRY) from None
    with resp:
        if resp.status_code != 200:
            reason = f"HTTP {resp.status_code}" + (f" {resp.reason}" if resp.reason else "")
            # Server trouble may pass; a 404 or 403 will not, but it may be this file alone.
            passing = resp.status_code >= 500 or resp.status_code in (408, 429)
            raise _Failed(reason, RETRY if passing else THIS_FILE)
        yield from _timed_body(resp, limits, start)


def _timed_body(resp, limits, start):
    """Yield ``resp``'s body as it arrives; stop a stalled, too slow or endless one with ``_Failed``."""
    import requests
    import urllib3

    read1 = getattr(resp.raw, "read1", None)
    if read1 is not None:
        # Returns as soon as any bytes are there, so the checks below run at
        # least once per silence timeout, however slowly the bytes drip.
        reads = iter(functools.partial(read1, CHUNK, decode_content=True), b"")
    else:
        # urllib3 < 2.2: each read waits for a whole chunk.
        reads = resp.iter_content(CHUNK)
    began, received = time.monotonic(), 0
    try:
        for chunk in reads:
            received += len(chunk)
            now = time.monotonic()
            if now - start > limits.deadline:
                raise _Failed(f"not done after {_secs(limits.deadline)}", GIVE_UP)
            flowing = now - began
            if flowing >= limits.speed_grace and received < limits.min_speed * flowing:
                raise _Failed(f"too slow: {_speed(received / flowing)} after {_secs(flowing)}", GIVE_UP)
            yield chunk
    except (requests.RequestException, urllib3.exceptions.HTTPError) as err:
        cause = err.args[0] if isinstance(err, requests.RequestException) and err.args else err
        if isinstance(cause, urllib3.exceptions.ReadTimeoutError):
            raise _Failed(f"stalled: no data for {_secs(limits.timeout[1])}", GIVE_UP) from None
        if isinstance(cause, urllib3.exceptions.DecodeError):
            raise _Failed("bad Content-Encoding data", THIS_FILE) from None
        raise _Failed(_short_reason(err), RETRY) from None


def _file_chunks(path):
    try:
        with open(path, "rb") as f:
            yield from iter(functools.partial(f.read, CHUNK), b"")
    except OSError as err:
        raise _Failed(f"cannot read {os.path.basename(path)}: {err.strerror}") from None


def _dir_chunks(folder, name):
    """Yield ``name.gz`` (or plain ``name``) from a local-directory mirror."""
    if not os.path.isdir(folder):
        raise _Failed("no such directory")
    for candidate in (name + ".gz", name):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            yield from _file_chunks(path)
            return
    raise _Failed(f"no {name}.gz or {name} there")


def _sources(name, data_dir, mirrors, offline, get_session, limits):
    """``[(label, make_chunks)]`` to try for one file, in order."""
    sources = []
    # A .gz dropped into the data dir by hand (as the error message suggests)
    # is the cheapest source of all.
    dropped = os.path.join(data_dir, name + ".gz")
    if os.path.isfile(dropped):
        sources.append((dropped, functools.partial(_file_chunks, dropped)))
    for mirror in mirrors:
        kind, where = _parse_mirror(mirror)
        if kind == "dir":
            sources.append((mirror, functools.partial(_dir_chunks, where, name)))
        elif not offline:
            sources.append((mirror, functools.partial(_http_chunks, get_session, _url_for(where, name), limits)))
    return sources


# ---------------------------------------------------------------------------
# Fetching one file

class _NullBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def reset(self, total=None):
        pass

    def update(self, n=1):
        pass


def _stderr_is_terminal():
    return bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())


def _bar(name, spec, progress):
    """A tqdm byte bar on stderr, or nothing when ``progress`` is False or (if None) stderr is no terminal."""
    enabled = _stderr_is_terminal() if progress is None else bool(progress)
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    # The total is the decompressed size, known exactly, whatever the gzip wrapper.
    return tqdm(total=idx_size(spec), desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=False, dynamic_ncols=True)


def _transfer(chunks, tmp, spec, bar):
    """Gunzip, verify and write one stream into ``tmp``; return the IDX content's SHA-256.

    Raises ``_Failed`` if the bytes are wrong. A file pinned only by the MD5
    of its publisher's .gz must arrive as exactly that .gz: the MD5 is taken
    over the bytes as they come, before gunzip.
    """
    decoder, verifier = _Gunzip(), _Verifier(spec)
    md5 = hashlib.md5(usedforsecurity=False) if spec.sha256 is None else None
    bar.reset(total=verifier.expected_size)
    with contextlib.closing(chunks), open(tmp, "wb") as out:
        for chunk in chunks:
            if md5 is not None:
                md5.update(chunk)
            data = decoder.feed(chunk)
            if decoder.gzipped is False:
                verifier.what = "gzip or IDX"
            verifier.update(data)
            out.write(data)
            bar.update(len(data))
        data = decoder.finish()
        verifier.update(data)
        out.write(data)
        digest = verifier.finish()
    if md5 is not None and md5.hexdigest() != spec.gz_md5:
        # a re-gzipped or plain copy may hold the right images, but nothing here can tell
        raise _Failed("not the publisher's .gz (MD5 mismatch; this file is pinned by the MD5 of the "
                      "original .gz, so it must come as that file)" if decoder.gzipped else
                      "not gzipped (this file is pinned by the MD5 of its publisher's .gz, so it must "
                      "come as that file)")
    return digest


def _fetch_from(make_chunks, tmp, spec, bar, backoff):
    """Fetch from one source, retrying quick failures that may pass after each back-off delay."""
    for delay in (*backoff, None):
        try:
            return _transfer(make_chunks(), tmp, spec, bar)
        except _Failed as err:
            if err.verdict != RETRY or delay is None:
                raise
            time.sleep(delay)


def _fetch_file(name, spec, path, sources, dead, backoff, progress, note, offline, mirror_env="BP_MNIST_MIRROR"):
    """Bring one verified file to ``path`` from the first source that has it; DataError if none does.

    ``dead`` maps the sources given up on (timeouts, server trouble that
    outlived its retries) to why, so the next files do not wait for them again.
    """
    tried = []
    for i, (label, make_chunks) in enumerate(sources):
        if label in dead:
            tried.append(f"{label} (given up earlier: {dead[label]})")
            continue
        try:
            with fsutil.atomic_path(path) as tmp, _bar(name, spec, progress) as bar:
                digest = _fetch_from(make_chunks, tmp, spec, bar, backoff)
            if spec.sha256 is None:
                # written after the file: a crash in between leaves a file without
                # a record, which is fetched again, never trusted
                fsutil.write_text_atomic(record_path(path), f"{digest}  {name}\n")
        except _Failed as err:
            tried.append(f"{label} ({err.reason})")
            given_up = err.verdict != THIS_FILE
            if given_up:
                dead[label] = err.reason
            if i + 1 < len(sources):
                also = "; not using it for the other files" if given_up else ""
                note(f"{name}: {label} failed ({err.reason}){also}; trying the next mirror")
            continue
        return label
    data_dir = os.path.join(os.path.dirname(path) or ".", "")
    skipped = " (offline: URL mirrors not tried)" if offline else ""
    raise DataError(
        f"could not fetch {name}: tried {'; '.join(tried) or 'no mirror'}{skipped}. "
        f"Pass --mirror URL|DIR (or set {mirror_env}), or put {name}.gz in {data_dir}"
    )


# ---------------------------------------------------------------------------
# The data dir: lock, leftovers, the whole job

@contextlib.contextmanager
def _dir_lock(data_dir, timeout, note):
    """Hold ``data_dir/.lock`` (flock) so parallel runs take turns; released when the process ends."""
    try:
        import fcntl
    except ImportError:     # Windows: no flock; parallel runs there may fetch twice
        yield
        return
    lock_path = os.path.join(data_dir, ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                # A file system without locks should not make downloads impossible.
                note(f"cannot lock {lock_path} ({err.strerror}); going on without it")
                break
            if not waiting:
                note(f"waiting for another bp process downloading into {data_dir} (lock {lock_path})")
                waiting = True
            if time.monotonic() > deadline:
                raise DataError(
                    f"another process has held {lock_path} for over {timeout:g} s; "
                    "wait for it to finish, or use another --data-dir"
                )
            time.sleep(0.1)
        yield
    finally:
        os.close(fd)    # closing the descriptor releases the flock


def _remove_partials(data_dir, files):
    """Delete temp files a killed run left behind; only called under the lock, so none is live."""
    prefixes = tuple("." + name + "." for name in files)
    with contextlib.suppress(OSError):
        for entry in os.listdir(data_dir):
            if entry.startswith(prefixes) and entry.endswith(".part"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(data_dir, entry))


def _todo(paths, files, force):
    """``{name: problem}`` for the files that must be fetched (problem None when only forced)."""
    todo = {}
    for name, path in paths.items():
        problem = cache_problem(path, files[name])
        if download_action(problem, force) != "use":
            todo[name] = problem
    return todo


REJECTED = ".rejected"


def _reject(path, problem, note):
    """Move a cached file that failed verification to ``NAME.rejected`` (returned), never deleting it:
    it may be someone's other data set put in the wrong place. Only the newest
    rejected copy is kept (it replaces an older one), so a file that keeps going
    bad cannot fill the disk with copies."""
    if not os.path.isfile(path) or os.path.islink(path):
        return None  # a folder or a link there: the fetch's rename reports it
    os.replace(path, path + REJECTED)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(path))  # bp's own record of the file it no longer has
    note(f"{path} failed verification ({problem}); moved it to {path + REJECTED} and fetching it again")
    return path + REJECTED


def _describe(todo, data_dir):
    missing = [name for name, problem in todo.items() if problem == MISSING]
    bad = [f"{name} ({problem})" for name, problem in todo.items() if problem not in (None, MISSING)]
    parts = (["missing " + ", ".join(missing)] if missing else []) + (["bad " + ", ".join(bad)] if bad else [])
    return "; ".join(parts) + f" in {data_dir}"


def _notes(progress):
    def note(message):
        if progress is not False:
            print(f"bp: {message}", file=sys.stderr, flush=True)
    return note


@contextlib.contextmanager
def _session_maker(session):
    """A function returning the given session, or one made on first use (and closed at the end)."""
    made = []

    def get():
        if session is not None:
            return session
        if not made:
            import requests

            s = requests.Session()      # trust_env: proxies and CA bundles from the environment
            s.headers["User-Agent"] = f"bp/{__version__} {s.headers['User-Agent']}"
            made.append(s)
        return made[0]

    try:
        yield get
    finally:
        for s in made:
            s.close()


def _write_error(err, data_dir):
    reason = err.strerror or str(err)
    if err.errno == errno.ENOSPC:
        hint = "free some space or pass --data-dir DIR"
    else:
        hint = "make it writable or pass --data-dir DIR"
    return DataError(f"cannot write to the data dir {data_dir}: {reason}; {hint}")


def offline_from_env():
    """True when ``$BP_OFFLINE`` is set to 1/true/yes/on."""
    return os.environ.get("BP_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def ensure_mnist(data_dir, mirrors=None, offline=None, force=False, progress=None, session=None, *,
                 dataset="mnist", files=None, timeout=DEFAULT_TIMEOUT, backoff=DEFAULT_BACKOFF, min_speed=DEFAULT_MIN_SPEED,
                 speed_grace=DEFAULT_SPEED_GRACE, deadline=DEFAULT_DEADLINE, lock_timeout=LOCK_TIMEOUT):
    """Make sure the verified files of ``dataset`` are in ``data_dir``; return ``{name: path}``.

    data_dir: the data dir; the dataset's cache folder in it (``datasets.cache_dir``:
        the data dir itself for MNIST) is created if needed.
    dataset: a ``datasets.DATASETS`` name, "mnist" by default.
    mirrors: base URLs or local directories, tried in order (default:
        ``resolve_mirrors(dataset=dataset)``).
    offline: open no connection; only local-directory mirrors are used and a
        missing file is a DataError saying which (default: ``$BP_OFFLINE``).
    force: fetch again even files that verify.
    progress: True/False for the tqdm bar and the one-line notes on stderr;
        None shows the bar only when stderr is a terminal.
    session: a ``requests.Session``-like object to fetch with (tests inject one).
    files: ``{name: FileSpec}`` to fetch instead of all the dataset's files (the test
        split needs two; tests use tiny files).
    timeout, backoff, min_speed, speed_grace, deadline, lock_timeout: see
        the module constants and docstring (tests pass tiny ones).

    Raises DataError (one line) when a file cannot be had from any mirror or
    the data dir cannot be written.
    """
    ds = datasets.get(dataset)
    files = files_of(ds) if files is None else files
    mirrors = resolve_mirrors(mirrors, dataset=ds.name)
    offline = offline_from_env() if offline is None else offline
    data_dir = datasets.cache_dir(data_dir, ds)
    paths = {name: os.path.join(data_dir, name) for name in files}
    note = _notes(progress)
    timeout = (timeout, timeout) if isinstance(timeout, (int, float)) else tuple(timeout)
    limits = _Limits(timeout, min_speed, speed_grace, deadline)

    # Files only ever appear under their final names whole and verified, so a
    # valid cache needs no lock, and works in a read-only data dir.
    todo = _todo(paths, files, force)
    if not todo:
        return paths
    _check_it_can_be_had(todo, data_dir, mirrors, offline, ds)
    try:
        os.makedirs(data_dir, exist_ok=True)
        with _dir_lock(data_dir, lock_timeout, note), _session_maker(session) as get_session:
            _remove_partials(data_dir, files)
            # Another run may have fetched them while this one waited for the lock.
            todo = _todo({name: paths[name] for name in todo}, files, force)
            dead = {}  # mirrors given up on: not asked again for the next file
            for name, problem in todo.items():
                sources = _sources(name, data_dir, mirrors, offline, get_session, limits)
                _replace(name, problem, files[name], paths[name], sources, dead, backoff, progress, note, offline, ds)
    except OSError as err:
        raise _write_error(err, data_dir) from None
    except DataError:
        raise
    except BpError as err:
        # fsutil.atomic_path reports a failed write (disk full, read-only) as a
        # plain BpError; to callers of this module every data problem is a DataError.
        raise DataError(str(err)) from None
    return paths


def _check_it_can_be_had(todo, data_dir, mirrors, offline, ds):
    """Before any lock or folder: offline with nowhere local to fetch from, or a data dir
    that is a file, is a DataError saying what to do."""
    if offline and not any(
        _sources(name, data_dir, mirrors, offline=True, get_session=None, limits=None) for name in todo
    ):
        if all(problem is None for problem in todo.values()):
            raise DataError("--force with --offline needs a local --mirror DIR holding the .gz files to fetch from")
        raise DataError(
            f"offline, and {ds.title}: {_describe(todo, data_dir)}; run again without --offline/BP_OFFLINE, "
            "or pass --mirror DIR with the .gz files"
        )
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DataError(f"the data dir {data_dir} is not a directory; pass --data-dir DIR")


def _replace(name, problem, spec, path, sources, dead, backoff, progress, note, offline, ds):
    """Fetch file ``name`` to ``path`` from the first of ``sources`` that gives it verified,
    having moved a cached copy that failed verification (``problem``) aside first."""
    rejected = problem not in (None, MISSING) and _reject(path, problem, note)
    try:
        label = _fetch_file(name, spec, path, sources, dead, backoff, progress, note, offline, ds.mirror_env)
    except DataError as err:
        if not rejected:
            raise
        raise DataError(f"{err} (the cached copy failed verification ({problem}) and was "
                        f"moved to {rejected})") from None
    note(f"{name}: verified, from {label}")
