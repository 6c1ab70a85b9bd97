"""Atomic file writes: nothing half-written ever sits under a final name.

Write to a temp file in the destination's folder (same file system, so the
rename is atomic), fsync, then ``os.replace`` it over the final name. Only
regular files are replaced: never a link, a device or a FIFO.
"""

import contextlib
import errno
import os
import reprlib
import secrets
import stat

from .errors import BpError


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path next to ``path``; on success rename it to ``path``.

    The file gets the permissions any new file would (0666 less the umask),
    not mkstemp's private 0600.

    On any exception the temp file is removed and ``path`` is untouched; an
    OSError (read-only folder, disk full) becomes a BpError naming the file.
    A ``path`` that is anything but a regular file is refused (see
    ``refuse_non_file``).
    """
    with atomic_paths([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths):
    """``atomic_path`` for several files written as one: yield a temp path next to each
    of ``paths``; only when every one is written and synced are they renamed, so a
    failure (a full disk on the last file) leaves none of them under its final name."""
    paths = [os.fspath(path) for path in paths]
    for path in paths:
        refuse_non_file(path)
    tmps = []
    try:
        for path in paths:
            # named before it is created (not mkstemp): an interrupt right after the
            # creation still finds the name to remove
            folder, name = os.path.split(os.path.abspath(path))
            tmps.append(os.path.join(folder, f".{name}.{secrets.token_hex(6)}.part"))
            os.close(os.open(tmps[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        yield tmps
        for tmp in tmps:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())
        for path, tmp in zip(paths, tmps):
            os.replace(tmp, path)
    except OSError as err:
        _remove(tmps)
        what = (shown_path(paths[0]) if len(paths) == 1 else
                f"{len(paths)} files into {shown_path(os.path.dirname(paths[0]) or '.')}")
        raise BpError(f"cannot write {what}: {err.strerror or err}; "
                      "check that the folder exists, is writable and has free space") from None
    except BaseException:
        _remove(tmps)
        raise


def refuse_non_file(path, error=BpError):
    """Raise ``error`` if ``path`` exists as anything but a regular file.

    A rename over a symbolic link replaces the link (``--onnx /dev/stdout``
    would turn the link into a file), and one over a device or a FIFO replaces
    it (as root, /dev/null itself): bp writes where the user named a file, never
    through a link or over something else.
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return
    if stat.S_ISLNK(mode):
        raise error(f"{shown_path(path)} is a symbolic link; bp never writes through a link nor replaces "
                    "one: remove it or name another file")
    if not stat.S_ISREG(mode):
        raise error(f"{shown_path(path)} is {describe_mode(mode)}; bp writes only regular files: name a file")


def current_umask():
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(tmps):
    for tmp in tmps:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


# ---------------------------------------------------------------------------
# Reading files from outside (configs, checkpoints, images): untrusted

_KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def describe_mode(mode):
    """What a file that is not a regular file is, in words ("a named pipe (FIFO)", …)."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a regular file"


def open_untrusted(path, what, error=BpError, max_bytes=None, hint=""):
    """Open ``path`` for reading in binary, refusing what would hang or exhaust memory.

    Anything but a regular file (a FIFO would block the reader forever,
    /dev/zero never ends) is refused, and so is a file over ``max_bytes``.
    The file is opened non-blocking and checked by ``fstat`` on the open
    descriptor, so it cannot be swapped between the check and the read.
    Every failure is ``error`` (a BpError class) saying "{what} {path} …",
    one line, plus ``hint``. Returns ``(file object, size in bytes)``.
    """
    name = os.fspath(path)
    shown = shown_path(name)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} {shown} not found{hint}") from None
    except IsADirectoryError:
        raise error(f"{what} {shown} is a folder, not a file{hint}") from None
    except PermissionError:
        raise error(f"{what} {shown} cannot be read: permission denied; check its permissions") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise error(f"{what} {shown} is a symbolic link that loops back on itself{hint}") from None
        raise error(f"{what} {shown} cannot be read: {err.strerror or err}{hint}") from None
    except ValueError:  # a NUL character: no file has such a name
        raise error(f"{what} {shown} is not a possible file name (it holds a NUL character){hint}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {shown} is {describe_mode(st.st_mode)}, not a regular file{hint}")
        if max_bytes is not None and st.st_size > max_bytes:
            raise error(f"{what} {shown} is {st.st_size:,} bytes, over bp's limit of {max_bytes:,}{hint}")
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def shown_path(path, limit=200):
    """A path as it can be printed inside a one-line message (see ``one_line``)."""
    text = os.fspath(path)
    return one_line(os.fsdecode(text) if isinstance(text, bytes) else text, limit)


def shell_word(path):
    """A path as a word of a command a message suggests, so the command runs as printed
    (quoted when it holds spaces or shell characters; escaped as ``shown_path`` when it
    holds control characters, which no suggestion can carry)."""
    import shlex

    return shlex.quote(shown_path(path, limit=1000))


def one_line(text, limit=200):
    """``text`` as it can go inside a one-line message: control characters (a newline
    in a file name or an exception's text) escaped, at most ``limit`` characters."""
    text = str(text)
    return truncate(text.encode("unicode_escape", "backslashreplace").decode("ascii")
                    if not text.isprintable() else text, limit)


def _short_repr():
    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxlong, r.maxother = 2, 60, 40, 60
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 6
    return r


_SHORT_REPR = _short_repr()


def shown(value, limit=60):
    """A user's value as it can go inside a one-line message: its repr, on one line, cut to
    ``limit`` characters. reprlib looks at a few items of a few levels only, so even a
    value whose full repr would take gigabytes (a list of aliases to lists of aliases)
    costs nothing to show."""
    try:
        text = _SHORT_REPR.repr(value)
    except ValueError:  # an int past Python's 4,300-digit str() limit
        text = f"an integer of {value.bit_length():,} bits"
    return one_line(text, limit)


def truncate(text, limit=80):
    """``text`` cut to ``limit`` characters with an ellipsis: never print a whole user value."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def read_text(path, max_bytes):
    """The UTF-8 text of a small file from outside, or None when it is missing, not a
    regular file, over ``max_bytes`` or not text: for files whose absence is an answer."""
    try:
        f, _ = open_untrusted(path, "file", max_bytes=max_bytes)
    except BpError:
        return None
    with f:
        try:
            return f.read(max_bytes + 1).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None
