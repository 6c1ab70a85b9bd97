"""Training progress on stderr: a tqdm bar per epoch on a terminal, one line per epoch otherwise."""

import sys

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {elapsed}<{remaining}{postfix}"


class Progress:
    def __init__(self, quiet=False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar = None
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())

    def start_epoch(self, epoch, epochs, steps, done=0):
        if self.quiet or not self.tty:
            return
        from tqdm import tqdm

        # no monitor thread: the bar moves every batch, so it has nothing to do, and the
        # engine forks its worker processes after the first bar (a fork copies no thread)
        tqdm.monitor_interval = 0
        # the bar takes what the terminal's width leaves (dynamic_ncols re-reads it as the window
        # changes); the rate is left out of the line (the epoch's summary line has samples/s), so
        # an 80-column terminal still has a bar, not one cell of it
        self.bar = tqdm(total=steps, initial=done, desc=f"epoch {epoch}/{epochs}", unit="batch",
                        file=self.stream, leave=True, dynamic_ncols=True, bar_format=BAR_FORMAT)

    def step(self, loss=None):
        """One batch done; ``loss``, when given, is the recent training loss."""
        if self.bar is not None:
            self.bar.update(1)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def end_epoch(self, m):
        line = (f"epoch {m['epoch']}/{m['epochs']}  loss {m['train_loss']:.4f}  "
                f"train {m['train_accuracy']:.2%}  val {percent(m['val_accuracy'])}  "
                f"lr {m['lr']:.4g}  {m['seconds']:.1f}s  {m['samples_per_second']:,.0f} samples/s")
        if self.bar is not None:
            self.bar.set_postfix_str(f"val {percent(m['val_accuracy'])}", refresh=True)
            self.bar.close()
            self.bar = None
        if not self.quiet:
            print(line, file=self.stream, flush=True)

    def note(self, text):
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def warn(self, text):
        """A line shown even when quiet."""
        print(text, file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def percent(x):
    """A fraction as a percentage for a progress line or a table; "-" for none (or NaN)."""
    return "-" if x is None or x != x else f"{x:.2%}"
