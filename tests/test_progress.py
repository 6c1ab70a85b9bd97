"""The progress display: on a terminal, a bar that fits the terminal's width."""

import fcntl
import os
import pty
import struct
import termios

import pytest

from bpcli.progress import Progress


def terminal(columns):
    """A real pseudo-terminal of ``columns`` columns: (what bp writes to, what it shows)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return os.fdopen(slave, "w"), master


def shown(master):
    os.set_blocking(master, False)
    chunks = []
    while True:
        try:
            chunks.append(os.read(master, 65536))
        except (BlockingIOError, OSError):
            break
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("columns", [60, 100])
def test_the_bar_uses_the_terminals_width(columns):
    stream, master = terminal(columns)
    progress = Progress(stream=stream)
    assert progress.tty
    progress.start_epoch(1, 27, steps=430)
    for _ in range(430):
        progress.step(loss=0.1234)
    progress.bar.refresh()
    text = shown(master)
    progress.close()
    stream.close()
    last = text.replace("\r\n", "\n").split("\r")[-1].strip("\n")
    line = last.splitlines()[-1] if last.splitlines() else last
    assert len(line) <= columns, line
    assert line.startswith("epoch 1/27 100%|") and "loss=0.1234" in line
    bar = line.split("|")[1]
    # the bar takes the room the rest leaves (the line fills the width), and there is room:
    # with the rate in the line, a 60-column terminal left the bar one cell
    assert len(line) >= columns - 2 and len(bar) >= 8, line


def test_the_bar_starts_no_thread():
    """The engine forks its worker processes after the first bar: a fork copies the
    calling thread alone, and Python 3.12+ warns of a fork with other threads running."""
    import threading

    stream, master = terminal(80)
    before = set(threading.enumerate())
    progress = Progress(stream=stream)
    progress.start_epoch(1, 2, steps=10)
    progress.step()
    started = set(threading.enumerate()) - before
    progress.close()
    stream.close()
    os.close(master)
    assert not started, started
