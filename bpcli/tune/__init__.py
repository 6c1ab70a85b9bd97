"""``bp tune``: hyperparameter search with Optuna, on one machine or on many.

A search is an Optuna *study*: trials ask the sampler (TPE) for values of the
config keys a space file names, each trial is an ordinary bp run (its own run
dir under the study's folder, started as ``bp train`` starts one: ``launch``), the objective is
the best validation accuracy (never the test set), and each epoch's
validation accuracy is reported so that the median pruner stops hopeless
trials early. The study folder is ``<runs root>/studies/NAME``: the trials'
run dirs ``trial-0007``, the default storage ``study.db`` and, at the end,
``best.yaml`` (the base config plus the best trial's values, for ``bp train
-c``).

Workers. ``--workers K`` starts K worker processes (processes, not threads:
training holds the GIL between BLAS calls), each training on max(1, cpus // K)
threads (``--threads``), with BLAS itself on one thread, set before the worker
imports numpy (a spawned process).
Every worker, in this process or another, on this machine or another, joins
the study through its storage and loops: trials finished (complete or
pruned) >= N: stop; otherwise run one. "N finished trials, none lost or
duplicated" holds across workers that never talk to each other by one rule
read from the storage: a trial runs only if fewer than N trials that are not
failed have a smaller trial number (trial numbers are handed out by the
storage, one each); a trial that loses that race is failed at once, marked
``surplus``, before it trains. A worker whose own share is done waits while
other trials run, since one of them may still fail and need a retry.

Storage. The default is SQLite in the study folder (Optuna's RDBStorage);
``--storage postgresql://user@host/db`` shares one study between machines.
Optuna's JournalStorage (a log file) was measured against SQLite with K
processes each running 40 trials of 5 reported steps on this 2-core machine:
2 workers 1.9 s (journal) vs 22 s (SQLite), 8 workers 10 s vs 62 s, no lock
error on either (SQLite with a 60 s busy timeout). The journal is faster,
but Optuna (5.0) gives only RDB storages a heartbeat, and the heartbeat is
what turns a worker killed with kill -9 into a failed trial that is retried
(``RetryHeartbeatStaleTrialCallback``): with the journal a killed worker's
trial stays "running" for ever and the study never reaches N. SQLite's cost,
about 0.3 s of bookkeeping per trial, is lost in trials that train for
seconds to minutes; one mechanism then covers one machine and many.

Stopping. Ctrl-C (or SIGTERM) reaches every worker: a training trial saves
its ``last.npz`` (train's own interrupt handling), is marked failed with the
user attribute ``interrupted``, and the command exits 130; running it again
continues the study up to N finished trials. ``BP_TUNE_HEARTBEAT`` sets the
heartbeat interval in seconds (default 10); a trial without a heartbeat for
three intervals is failed and queued again.
"""

import os
import time

from .. import config as config_mod
from ..cpus import usable_cpus
from ..errors import BpError, ConfigError
from ..fsutil import shown_path
from .report import summarize
from .space import check_corners, check_searchable, read_space
from .study import (check_study_name, default_storage, default_study_name, heartbeat_seconds, lost_storage,
                    open_storage, open_study, require_optuna, shown_url, storage_cause, study_dir)
from .trials import Job, counts, note, work
from .workers import run_workers


class Interrupted(BpError):
    """Ctrl-C or SIGTERM during a search: running trials were saved as interrupted."""

    exit_code = 130


def tune(config_file, sets, space_file, n_trials=20, timeout=None, workers=1, storage=None,
         study=None, seed=None, quiet=False):
    """Run (or continue) a study until it has ``n_trials`` finished trials; return the
    summary document (``--json`` prints it)."""
    space = read_space(space_file)
    base = config_mod.resolve(config_file, sets)
    if base.recipe.data.validation == 0 and "data.validation" not in space:
        raise ConfigError("bp tune scores trials on the validation split, but the base config holds "
                          "none out (data.validation: 0); set data.validation above 0")
    val = space.get("data.validation")
    if val is not None and (val.choices and 0 in val.choices or val.low == 0):
        raise ConfigError("space key 'data.validation' may reach 0, which leaves no validation split "
                          "to score trials on; search values above 0")
    cpus = usable_cpus()
    if workers > cpus:
        raise ConfigError(f"--workers {workers} is more than the {cpus} CPU{'s' * (cpus > 1)} bp may use here; "
                          f"use at most --workers {cpus} (more machines can join the study with --storage)")
    name = check_study_name(study or default_study_name(space_file))
    folder = study_dir(name)
    url = storage or default_storage(folder)
    heartbeat = heartbeat_seconds()
    require_optuna()  # exit 1 with the install command, before anything is created
    check_searchable(space, shown_path(space_file))
    check_corners(space, base, shown_path(space_file))
    from ..download import ensure_mnist

    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise BpError(f"cannot create the study folder {folder}: {err.strerror or err}; set BP_RUNS_DIR") from None
    the_study = open_study(open_storage(url, heartbeat), name, space, base, url)
    ensure_mnist(base.recipe.data.dir, progress=False if quiet else None,  # once, not per worker
                 dataset=base.recipe.data.dataset)
    job = Job(space, base, url, name, folder, n_trials, None if timeout is None else time.time() + timeout,
              seed, heartbeat, threads=max(1, cpus // workers) if workers > 1 else None, quiet=quiet)
    try:
        before = counts(the_study.get_trials(deepcopy=False))
        note(job, f"study {name}: {before['finished']} of {n_trials} trials finished; storage "
                   f"{shown_url(url)}; {workers} worker{'s' * (workers > 1)}")
        t0 = time.perf_counter()
        _run(job, workers, the_study)
        return summarize(the_study, space, base, config_file, sets, folder, url, n_trials,
                         time.perf_counter() - t0, timed_out=timeout is not None)
    except Exception as err:
        cause = storage_cause(err)
        if cause is None:
            raise
        raise lost_storage(cause, url) from None


def _run(job, workers, study):
    try:
        if workers == 1:
            work(job)
        else:
            run_workers(job, workers)
    except KeyboardInterrupt:
        c = counts(study.get_trials(deepcopy=False))
        raise Interrupted(f"interrupted; running trials were saved as interrupted (their run dirs hold "
                          f"last.npz); {c['finished']} of {job.n_trials} trials finished: run the same "
                          "command again to continue the study") from None
    except BpError as err:
        if err.exit_code == 130:
            raise Interrupted(f"{err}; run the same bp tune command again to continue the study") from None
        raise
