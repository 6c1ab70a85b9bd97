"""fsutil: atomic writes that respect the umask, and files from outside opened safely."""

import os
import stat

import pytest

from bpcli.errors import BpError, CheckpointError
from bpcli.fsutil import open_untrusted, shown_path, truncate, write_text_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_respects_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~umask


def test_open_untrusted_reads_a_regular_file(tmp_path):
    (tmp_path / "a").write_bytes(b"hello")
    f, size = open_untrusted(tmp_path / "a", "config file")
    with f:
        assert (f.read(), size) == (b"hello", 5)


def _refusal(path, **kw):
    with pytest.raises(CheckpointError) as err:
        open_untrusted(path, "checkpoint", CheckpointError, **kw)
    return str(err.value)


def test_open_untrusted_refuses_what_would_hang_or_flood(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    assert "is a named pipe (FIFO), not a regular file" in _refusal(fifo)  # and did not block
    assert "is a character device" in _refusal("/dev/zero")
    assert "is a folder" in _refusal(tmp_path)
    (tmp_path / "big").write_bytes(b"x" * 101)
    assert "101 bytes, over bp's limit of 100" in _refusal(tmp_path / "big", max_bytes=100)


def test_open_untrusted_names_a_symlink_loop_and_a_missing_file(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert "symbolic link that loops" in _refusal(tmp_path / "a")
    assert "not found" in _refusal(tmp_path / "nothing")


def test_a_path_with_a_newline_is_shown_on_one_line(tmp_path):
    message = _refusal(tmp_path / "two\nlines.npz")
    assert "\n" not in message and "two\\nlines.npz" in message
    assert shown_path("x" * 500).endswith("…") and len(shown_path("x" * 500)) == 200


def test_truncate_never_prints_a_whole_value():
    assert truncate("y" * 10_000, 80) == "y" * 79 + "…"
    assert truncate("short") == "short"
    assert issubclass(CheckpointError, BpError)


def test_atomic_write_never_replaces_a_link(tmp_path):
    """A rename over a link replaces the link itself (as root, `--onnx /dev/stdout` made
    /dev/stdout a file): refused, the link and its target untouched."""
    target = tmp_path / "target.txt"
    target.write_text("keep")
    (tmp_path / "link.txt").symlink_to(target)
    with pytest.raises(BpError, match="is a symbolic link"):
        write_text_atomic(tmp_path / "link.txt", "x")
    assert (tmp_path / "link.txt").is_symlink() and target.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "target.txt"]


def test_atomic_write_never_replaces_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(BpError, match="named pipe"):
        write_text_atomic(tmp_path / "pipe", "x")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)


def test_atomic_paths_on_a_full_disk_leaves_none_of_the_files(small_disk):
    """The third of three files does not fit: none of them takes its final name, no temp file stays."""
    from bpcli.fsutil import atomic_paths

    disk, leave = small_disk
    (disk / "b.txt").write_text("the old b")
    leave(64 << 10)
    with pytest.raises(BpError, match="cannot write 3 files into .*No space left on device"):
        with atomic_paths([disk / "a.txt", disk / "b.txt", disk / "c.txt"]) as tmps:
            for tmp, size in zip(tmps, (8 << 10, 8 << 10, 1 << 20)):
                with open(tmp, "wb") as f:
                    f.write(b"x" * size)
    assert sorted(p.name for p in disk.iterdir()) == [".filler", "b.txt"]
    assert (disk / "b.txt").read_text() == "the old b"
