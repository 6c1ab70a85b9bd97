"""One worker's trials: the trial-count rule, each trial trained as ``bp train`` trains
(``launch``), its pruning, failures that end a study, and the signals a worker acts on
at safe points."""

import contextlib
import functools
import os
import socket
import sys
import time

from .. import config as config_mod
from .. import record
from ..errors import BpError
from ..fsutil import one_line, shown, truncate
from ..progress import percent
from .study import POLL_SECONDS, lost_storage, open_storage, require_optuna, storage_cause, storage_errors


class Surplus(Exception):
    """This trial would make more than N; it is failed before it trains (never shown to a user)."""


def counts(trials):
    """How many trials are in each state (surplus ones left out); "finished" = complete + pruned."""
    from optuna.trial import TrialState

    c = {"complete": 0, "pruned": 0, "failed": 0, "interrupted": 0, "running": 0, "waiting": 0}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            c["complete"] += 1
        elif t.state == TrialState.PRUNED:
            c["pruned"] += 1
        elif t.state == TrialState.RUNNING:
            c["running"] += 1
        elif t.state == TrialState.WAITING:
            c["waiting"] += 1
        elif t.state == TrialState.FAIL and not t.user_attrs.get("surplus"):
            c["interrupted" if t.user_attrs.get("interrupted") else "failed"] += 1
    c["finished"] = c["complete"] + c["pruned"]
    return c


def admitted(trials, number, n_trials):
    """Whether trial ``number`` may run: fewer than N trials that are not failed come before it."""
    from optuna.trial import TrialState

    alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(1 for t in trials if t.number < number and t.state in alive) < n_trials


# ---------------------------------------------------------------------------
# One worker: trials until the study has N finished


def _progress_class():
    from ..train import Progress

    class TrialProgress(Progress):
        """Reports each epoch's validation accuracy to the trial; when the pruner says stop,
        stops at the start of the next epoch, so the run dir keeps that epoch's metrics and
        checkpoints (train saves them after ``end_epoch``)."""

        def __init__(self, trial):
            super().__init__(quiet=True)
            self.trial = trial
            self.pruned_after = None
            self.last = None
            self.reported = []  # each epoch's validation accuracy

        def end_epoch(self, m):
            super().end_epoch(m)
            self.last = m
            if m["val_accuracy"] is not None:
                self.reported.append(m["val_accuracy"])
                self.trial.report(m["val_accuracy"], m["epoch"])
                if m["epoch"] < m["epochs"] and self.trial.should_prune():
                    self.pruned_after = m["epoch"]

        def start_epoch(self, epoch, epochs, steps, done=0):
            if self.pruned_after is not None:
                import optuna

                raise optuna.TrialPruned(f"pruned after epoch {self.pruned_after}")
            super().start_epoch(epoch, epochs, steps, done)

    return TrialProgress


class Job:
    """What every worker needs to know (picklable: it crosses to spawned processes)."""

    def __init__(self, space, base, url, study, folder, n_trials, deadline, seed, heartbeat, threads=None,
                 quiet=False):
        # the space and base config as the driver read and checked them: a worker never reads
        # the files again (they may have changed since)
        self.space, self.base = space, base
        self.url, self.study, self.folder, self.n_trials = url, study, folder, n_trials
        self.deadline, self.seed, self.heartbeat = deadline, seed, heartbeat
        self.threads, self.quiet = threads, quiet


def note(job, text):
    if not job.quiet:
        print(text, file=sys.stderr, flush=True)


def _trial_dir(folder, number):
    """A new run dir for trial ``number`` (a name left by an earlier study of the same name
    gets a suffix)."""
    from .. import rundir

    return rundir.claim(os.path.join(folder, f"trial-{number:04d}"))


def work(job, worker=0):
    """Run trials of the study until it has N finished ones (or the deadline passes).
    Returns the number of trials this worker finished. A database lost on the way is
    one BpError, whichever call met it."""
    stop = []  # the signals asked to stop this worker (see _stop_requests)
    with _stop_requests(stop), _quiet_storage_threads():
        try:
            return _work(job, worker, stop)
        except Exception as err:
            cause = storage_cause(err)
            if cause is None:
                raise
            raise lost_storage(cause, job.url) from None


def _work(job, worker, stop):
    from .. import launch

    study = _load_study(job, worker)
    data = launch.load_data(job.base, progress=False)
    trials = TrialRunner(job, study, data, stop)
    return _loop(job, study, trials.objective, stop)


def _load_study(job, worker):
    """The study as this worker sees it: TPE (seeded per worker) and the median pruner."""
    optuna = require_optuna()
    seed = None if job.seed is None else job.seed + worker
    return optuna.load_study(
        study_name=job.study, storage=open_storage(job.url, job.heartbeat),
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        # the first 5 trials run whole (a median needs a population), and a trial is judged from
        # epoch 2 on (after one epoch the ranking says little); the last epoch is never pruned
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2))


class TrialRunner:
    """One worker's trials: each is the base config with the sampler's values, trained as
    ``bp train`` trains (``launch``) into a run dir of the study folder; its objective is
    the run's best validation accuracy."""

    def __init__(self, job, study, data, stop):
        self.job, self.study, self.data, self.stop = job, study, data, stop
        self.space, self.base = job.space, job.base
        self.host = socket.gethostname()
        self.TrialProgress = _progress_class()

    def objective(self, trial):
        try:
            return self.attempt(trial)
        except KeyboardInterrupt:  # asked to stop before train began, or a second Ctrl-C in it
            trial.set_user_attr("interrupted", True)
            raise

    def attempt(self, trial):
        """Admit the trial, make its config and run dir, train it -> its validation accuracy."""
        from .. import launch

        if not admitted(self.study.get_trials(deepcopy=False), trial.number, self.job.n_trials):
            trial.set_user_attr("surplus", True)
            raise Surplus()
        _stop_if_asked(self.stop)  # before a run dir is made for a trial that would not train
        params = {key: p.suggest(trial) for key, p in self.space.items()}
        cfg = config_mod.variant(self.base, params, f"trial {trial.number}")
        run_dir = _trial_dir(self.job.folder, trial.number)
        trial.set_user_attr("run_dir", run_dir)
        trial.set_user_attr("host", self.host)
        progress = self.TrialProgress(trial)
        t0 = time.perf_counter()
        say = functools.partial(self.say, trial, params, progress, t0)
        # train takes the signals meanwhile, stops at the next step and says so; a signal
        # that came as the run ended or diverged stays in stop for the loop to see
        with self.outcomes(trial, cfg, run_dir, progress, say):
            summary = launch.start(launch.Plan(cfg, run_dir), self.data, progress, threads=self.job.threads,
                                   latest=False, stop=self.stop)
        say(f"val {percent(summary['val_accuracy'])}")
        return summary["val_accuracy"]

    @contextlib.contextmanager
    def outcomes(self, trial, cfg, run_dir, progress, say):
        """A trial that did not finish: pruned, interrupted or diverged, recorded and said so."""
        optuna = require_optuna()
        from ..errors import TrainingDiverged
        from ..train import Interrupted as RunInterrupted

        try:
            yield
        except optuna.TrialPruned:
            _write_pruned(run_dir, progress, cfg)
            say(f"pruned (val {percent(_best_val(progress))})")
            raise
        except RunInterrupted:
            trial.set_user_attr("interrupted", True)
            say("interrupted")
            raise
        except KeyboardInterrupt:  # a second Ctrl-C inside train: it stopped at once
            last = os.path.exists(os.path.join(run_dir, "last.npz"))
            record.write(run_dir, record.INTERRUPTED, error="interrupted" + (
                "; last.npz holds the last finished epoch" if last else " before the first epoch finished"),
                epochs_done=progress.last["epoch"] if progress.last else 0,
                epochs_planned=cfg.recipe.train.epochs)
            raise
        except TrainingDiverged as err:
            trial.set_user_attr("error", truncate(str(err), 300))
            say("diverged")
            raise

    def say(self, trial, params, progress, t0, state):
        """Record the trial's epochs and time, and print a line: 'trial 3: pruned after 2 epochs, ...'."""
        seconds = time.perf_counter() - t0
        epochs = progress.last["epoch"] if progress.last else 0
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("seconds", seconds)
        shown = " ".join(f"{k}={shown_value(v)}" for k, v in params.items())
        note(self.job, f"trial {trial.number}: {state} after {epochs} epoch{'s' * (epochs != 1)}, "
                        f"{seconds:.1f}s: {shown}")


def _loop(job, study, objective, stop):
    optuna = require_optuna()
    from ..errors import TrainingDiverged

    done = 0
    while job.deadline is None or time.time() < job.deadline:
        _stop_if_asked(stop)
        optuna.storages.fail_stale_trials(study)  # a killed worker's trial: failed, queued again
        trials = study.get_trials(deepcopy=False)
        c = counts(trials)
        if c["finished"] >= job.n_trials:
            break
        failing = too_many_failures(trials, job.n_trials)
        if failing:
            raise BpError(f"study '{job.study}': {failing}; bp stopped it. Narrow the space (see the trials' "
                          "errors in their result.json) and start a new study with --study NAME")
        if c["finished"] + c["running"] + c["waiting"] >= job.n_trials and not c["waiting"]:
            time.sleep(POLL_SECONDS)  # the rest are running; one may yet fail and come back
            continue
        try:
            study.optimize(objective, n_trials=1, catch=(TrainingDiverged,))
            done += 1
        except Surplus:
            continue
    return done


FAILURES_IN_A_ROW = 10  # failed trials in a row (by trial number) that end a study
FAILURES_PER_TRIAL = 2  # ... or failed trials, in all, per trial asked for (and at least FAILURES_IN_A_ROW)


def too_many_failures(trials, n_trials):
    """Why the study should stop for its failures (trials that diverged, or whose worker
    was killed), or None. Failed trials never count toward N, so a space whose every trial
    diverges would otherwise run for ever; interrupted and surplus trials do not count."""
    from optuna.trial import TrialState

    ended = [t for t in sorted(trials, key=lambda t: t.number)
             if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
             or t.state == TrialState.FAIL and not t.user_attrs.get("surplus") and not t.user_attrs.get("interrupted")]
    failed = [t for t in ended if t.state == TrialState.FAIL]
    in_a_row = next((i for i, t in enumerate(reversed(ended)) if t.state != TrialState.FAIL), len(ended))
    if in_a_row < FAILURES_IN_A_ROW and len(failed) < max(FAILURES_IN_A_ROW, FAILURES_PER_TRIAL * n_trials):
        return None
    last = str(failed[-1].user_attrs.get("error") or "its worker stopped beating").split(";")[0]
    return (f"{len(failed)} trials failed, the last {in_a_row} in a row (trial {failed[-1].number}: "
            f"{truncate(one_line(last), 160)})")


def _stop_if_asked(stop):
    if stop:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_requests(stop):
    """Ctrl-C, SIGTERM and SIGHUP noted in ``stop`` for the worker to act on at its next
    safe point (before a trial, while it waits, or, inside train, after the step), never
    raised in the middle of a storage call: a KeyboardInterrupt there left SQLite's write
    lock held by a half-finished transaction, and a trial created by Optuna's ask before
    its heartbeat's first beat would never be stale and stay "running" for ever. (Masking
    the signals in this thread did not hold them back: BLAS's threads take them too, and
    Python runs the handler in this thread all the same.)"""
    from ..train import STOP_SIGNALS, handling

    with handling(STOP_SIGNALS, lambda signum, frame: stop.append(signum)):
        yield


@contextlib.contextmanager
def _quiet_storage_threads():
    """Optuna's heartbeat thread, when the database goes away, dies with a traceback on
    stderr; the worker meets the same failure at its next storage call and says it in one
    line, so the thread's is not printed."""
    import threading

    errors, old = storage_errors(), threading.excepthook

    def hook(args):
        if not issubclass(args.exc_type, errors):
            old(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = old


def _write_pruned(run_dir, progress, cfg):
    """The record of a pruned trial: like train's for a run that ended early, with its own state."""
    epochs = progress.last["epoch"] if progress.last else 0
    before = record.read(run_dir)
    record.write(run_dir, record.PRUNED, error=f"stopped by the pruner after epoch {epochs}: its validation accuracy "
                 "was below the median of earlier trials at that epoch",
                 started=record.text(before, "started"), total_seconds=record.number(before, "total_seconds"),
                 val_accuracy=_best_val(progress), epochs_done=epochs, epochs_planned=cfg.recipe.train.epochs)


def _best_val(progress):
    return max(progress.reported) if progress.reported else None


def shown_value(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return shown(value, 40).replace(" ", "")
