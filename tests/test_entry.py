"""The installed bp command: a signal that arrives while bp is still being imported ends it
with one line and exit 130, as one a moment later would, never a traceback."""

import subprocess
import sys

import pytest

# A stand-in for a signal that comes while Python imports bp's command line: the import of
# bpcli.cli sends it (deterministic, where a timed kill would race the interpreter's start).
SIGNAL_DURING_IMPORT = """
import importlib.abc, os, signal, sys
class Interrupting(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "bpcli.cli":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), getattr(signal, {signal!r}))
        return None
sys.meta_path.insert(0, Interrupting())
sys.argv = ["bp", "--help"]
from bpcli._entry import main
sys.exit(main())
"""


@pytest.mark.parametrize("signal", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_while_bp_starts_is_one_line_and_exit_130(signal):
    result = subprocess.run([sys.executable, "-c", SIGNAL_DURING_IMPORT.format(signal=signal)],
                            capture_output=True, text=True, timeout=60, start_new_session=True)
    assert result.returncode == 130, result.stderr
    assert result.stderr == f"Error: stopped by {signal} while bp was starting\n"


def test_after_starting_bp_handles_signals_itself():
    """The start-up handlers are gone once the command line is imported (Ctrl-C in training
    must still save the run: a KeyboardInterrupt, not this module's exit)."""
    code = ("import signal, sys; sys.argv = ['bp', '--version']; from bpcli import _entry; "
            "import bpcli.cli; orig = bpcli.cli.main; "
            "bpcli.cli.main = lambda: print(signal.getsignal(signal.SIGINT) is signal.default_int_handler); "
            "_entry.main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "True", result.stderr
