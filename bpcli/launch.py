"""Starting a training run as ``bp train`` does: every check first, then the data,
the run dir and ``train.train``; the CLI only parses the flags and prints.

The order is the point. A mistake the user can fix (a bad config, a run dir that
holds a run or that another process trains in, a resume that cannot be, an
``--init`` model that does not fit) is found before any data is loaded or
fetched; the run dir is created only once the data is there, so a failed
download leaves no empty run behind.
"""

import os
from typing import NamedTuple

from . import config as config_mod
from . import rundir
from . import train as train_mod
from .data import load_mnist, settle_data_dir
from .errors import ConfigError


class Plan(NamedTuple):
    """A run about to start: its config, its run dir (None: a new timestamped one),
    the checkpoint it resumes from, the model it starts from (--init), --force."""

    cfg: object
    run_dir: str
    resume_from: str = None
    init: tuple = None
    force: bool = False


def plan(config_file=None, sets=(), flags=None, run_dir=None, resume=None, init_model=None, force=False,
         data_dir=None):
    """Every check of a ``bp train`` command line, before any data is loaded -> Plan."""
    flags = flags or {}
    if resume:
        if config_file or sets or run_dir or force or init_model:
            raise ConfigError("--resume continues a run with its own config and run dir; "
                              "drop -c/--set/--run-dir/--force/--init (only --epochs may extend it)")
        run_dir, ckpt = rundir.locate_resume(resume)
        if os.path.isdir(run_dir):
            rundir.lock(run_dir)  # first: a run still training is never resumed a second time
        cfg = train_mod.resume_config(ckpt, flags)
        settle_data_dir(cfg, data_dir)
        return Plan(cfg, run_dir, resume_from=ckpt)
    cfg = config_mod.resolve(config_file, sets, flags)
    rundir.check(run_dir, force)
    if run_dir and os.path.isdir(run_dir):
        rundir.lock(run_dir)  # an existing run dir is held from now on: nobody starts in it meanwhile
    init = train_mod.initial_model(init_model, cfg) if init_model else None
    settle_data_dir(cfg, data_dir)
    return Plan(cfg, run_dir, init=init, force=force)


def load_data(cfg, progress=None, mirrors=None, offline=None):
    """The dataset of the config ``cfg``, fetched into its data dir if missing."""
    data = cfg.recipe.data
    return load_mnist(data.dir, mirrors=mirrors, offline=offline, progress=progress, dataset=data.dataset)


def start(plan, data, progress, threads=None, latest=True, stop=None):
    """Create the run dir (a new run) and train it -> the summary.

    The run dir is let go when training ends (a bp tune worker trains many runs in one
    process); ``latest`` and ``stop`` are ``train.train``'s."""
    run_dir = plan.run_dir if plan.resume_from else rundir.create(plan.run_dir, plan.force)
    try:
        return train_mod.train(plan.cfg, data, run_dir, resume_from=plan.resume_from, progress=progress,
                               threads=threads, init=plan.init, latest=latest, stop=stop)
    finally:
        rundir.release(run_dir)

