"""Where a step's shards run, chosen step by step from their measured times.

``worker_modes()`` says which ways are allowed here (``BP_WORKERS`` may narrow
them); ``ShardPlacement`` times the steps of the way in use, tries the others
now and then, and keeps the fastest. The choice never changes a bit of the
result, only how long a step takes, which depends on the machine's load.
"""

import os

from . import processes


def worker_modes():
    """How shards may run here, the one tried first first (see ``ShardPlacement``): worker processes
    where they can be forked, worker threads, the caller alone. ``BP_WORKERS=threads``
    or ``processes`` leaves out the other kind of worker; ``serial`` leaves out both (every
    shard on the caller: the bits of N threads, on one core)."""
    asked = os.environ.get("BP_WORKERS", "").strip().lower()
    if asked == "serial":
        return ["serial"]
    if asked == "threads" or not processes.available():
        return ["threads", "serial"]
    if asked == "processes":
        return ["processes", "serial"]
    return ["processes", "threads", "serial"]


class ShardPlacement:
    """Where the shards of each step run: on worker processes ("processes",
    ``WorkerProcesses``), on worker threads ("threads", ``WorkerThreads``), or one
    after the other on the caller ("serial"); ``modes`` in the order first tried.

    Every mode gives the same bits (a shard's result never depends on where it
    ran), so the choice is speed alone, and it changes with the machine's load:
    when another process holds a core, a worker that shares it stalls every
    step, and the caller alone (or threads, which take work as they come free)
    may be faster. The engine times its steps in the mode it runs and tries
    each other mode for ``TRIAL`` steps: every one of them right at the start,
    then again ``EVERY`` steps later, or twice as long as last time (up to
    ``LONGEST``) while it keeps losing; it keeps the fastest. A trial is judged
    on its own steps but the first (which may wake sleeping workers), and so
    is the first mode (after its first step: right after the fork, copy-on-write
    page faults slow both processes for a few steps, which a trial then forgets).
    A step of a trial's first ``TRIAL`` that takes more than ``GIVE_UP`` times the
    current mode's steps ends the trial at once, as lost: under load, a worker
    sharing a busy core can take milliseconds a step, and a whole trial of such
    steps costs more than the trial can win.

    A mode's time is the mean of its steps since it was last tried, and over
    the last ~``WINDOW`` of them once there are more: with a worker on a busy
    core, network a's steps took ~0.48 ms but ~4.4 ms one step in five or so,
    and a few steps can miss the slow ones. So a trial that is ahead after its
    ``TRIAL`` steps goes on until its mean covers ``WINDOW`` steps, and wins
    only if it is still ahead then (its mean decides: one slow step there, as
    a VM gives now and then, does not end it); the mode it replaced is tried again
    ``WINDOW`` steps later (a window can be lucky too); and a trial lost to a
    mean of fewer steps than a window (at the start, the first mode's) is tried
    again ``WINDOW`` steps later rather than after the doubled wait, unless it
    lost hopelessly. (With a quick win and a check afterwards instead, worker
    processes that won on a few lucky steps kept ~400 of network a's steps
    with one core busy.)
    """

    EVERY, LONGEST, TRIAL, GIVE_UP, WINDOW = 200, 3200, 8, 2.0, 32

    def __init__(self, modes=("threads", "serial")):
        self.modes = list(modes)
        self.mode = self.modes[0]
        self.seconds = dict.fromkeys(self.modes)  # recent step time of each mode
        self.timed = dict.fromkeys(self.modes, 0)  # the steps that ``seconds`` averages
        self.steps = 0
        self.trying = None  # the mode on trial, if any
        self.fresh = False  # the trial has not run its first (untimed) step yet
        # each mode's next trial: every one right at the start; WINDOW steps after a trial
        # replaced it; after a loss, twice as long as last time (from EVERY, up to LONGEST)
        self.due = {m: i * self.TRIAL for i, m in enumerate(self.modes)}
        self.every = dict.fromkeys(self.modes, self.EVERY)
        self.counts = dict.fromkeys(self.modes, 0)  # steps run in each mode

    def choose(self):
        self.steps += 1
        if self.trying is None:
            for mode in self.modes:
                if mode != self.mode and self.steps >= self.due[mode]:
                    self.trying, self.fresh = mode, True
                    self.seconds[mode], self.timed[mode] = None, 0  # judged on this trial alone
                    break
        return self.current()

    def current(self):
        return self.trying or self.mode

    def drop(self, mode):
        """Never use ``mode`` again (it failed to start)."""
        self.modes.remove(mode)
        for table in (self.seconds, self.timed, self.due, self.every):
            table.pop(mode)
        if self.mode == mode:
            self.mode = self.modes[0]
        if self.trying == mode:
            self.trying = None

    def record(self, mode, seconds):
        self.counts[mode] += 1
        if self.counts[mode] == 1 or (mode == self.trying and self.fresh):  # a mode's first, a trial's first
            self.fresh = False
            return
        self.timed[mode] += 1
        old = self.seconds[mode]
        weight = max(1 / self.timed[mode], 1 / self.WINDOW)  # the mean, then a moving mean
        self.seconds[mode] = seconds if old is None else old + weight * (seconds - old)
        if mode == self.trying:
            self._judge(mode, seconds)

    def _judge(self, tried, seconds):
        """After a timed step of the trial of ``tried``: end it, won or lost, or go on."""
        current, mean = self.seconds[self.mode], self.seconds[tried]
        in_trial = self.timed[tried] < self.TRIAL  # (after it, going on to a window: the mean decides)
        if in_trial and current is not None and seconds > self.GIVE_UP * current:
            self._lost(tried, hopeless=True)
        elif self.timed[tried] < self.TRIAL - 1:
            return
        elif current is not None and mean >= current:
            self._lost(tried)
        elif current is None or self.timed[tried] >= self.WINDOW:
            replaced, self.mode, self.trying = self.mode, tried, None
            # tried again soon: the winner's window may have been a lucky one
            self.every[replaced] = self.EVERY
            self.due[replaced] = self.steps + self.WINDOW
        # else ahead so far: it goes on until its mean covers a window

    def _lost(self, tried, hopeless=False):
        self.trying = None
        if self.timed[self.mode] < self.WINDOW and not hopeless:
            # lost to a mean of a few steps, which may have missed that mode's slow ones
            self.due[tried] = self.steps + self.WINDOW
        else:
            self.every[tried] = min(2 * self.every[tried], self.LONGEST)
            self.due[tried] = self.steps + self.every[tried]
