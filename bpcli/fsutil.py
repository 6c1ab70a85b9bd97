"""Atomic file writes: nothing half-written ever sits under a final name.

Write to a temp file in the destination's folder (same file system, so the
rename is atomic), fsync, then ``os.replace`` it over the final name.
"""

import contextlib
import os
import tempfile

from .errors import BpError


@contextlib.contextmanager
def atomic_path(path, mode=0o644):
    """Yield a temp path next to ``path``; on success rename it to ``path``.

    On any exception the temp file is removed and ``path`` is untouched; an
    OSError (read-only folder, disk full) becomes a BpError naming the file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part", dir=folder)
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        raise BpError(f"cannot write {path}: {err.strerror or err}; "
                      "check that the folder exists, is writable and has free space") from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp):
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
