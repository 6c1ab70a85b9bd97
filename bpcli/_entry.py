"""The installed ``bp`` command starts here, not in ``bpcli.cli``.

Importing the command line (click, the commands) takes a tenth of a second or
more on a loaded machine, and a Ctrl-C, SIGTERM or SIGHUP in that time met
Python's defaults: a KeyboardInterrupt traceback, or a silent death. Here the
three are caught first, and end bp as they would a moment later: one line,
exit 130. Once the command line is imported, its own handlers take over.
"""

import signal
import sys

STOPS = [s for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s)]


def _stopped_while_starting(signum, frame):
    sys.stderr.write(f"Error: stopped by {signal.Signals(signum).name} while bp was starting\n")
    sys.stderr.flush()
    raise SystemExit(130)


def main():
    before = {name: signal.signal(getattr(signal, name), _stopped_while_starting) for name in STOPS}
    from .cli import main as command_line

    for name, handler in before.items():
        signal.signal(getattr(signal, name), handler)
    return command_line()
