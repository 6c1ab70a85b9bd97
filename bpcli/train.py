"""Training: mini-batch SGD over MNIST, run directories, checkpoints and exact resume.

One epoch shuffles the training images with the run's own Generator, then
for each mini-batch of ``batch_size`` rows: feedforward, backpropagate,
and move every weight against the averaged gradient (``w <- w - lr dC/dw``).

Exact resume: everything random comes from one Generator whose state is
saved in each checkpoint, together with its state at the start of the
current epoch (to redraw that epoch's permutation). A run interrupted mid-
epoch and resumed ends with the same weights, bit for bit, as one that was
never interrupted (same machine, BLAS kernels and thread count: another
machine's kernels sum in another order, and `--resume` on them warns).
"""

import contextlib
import math
import os
import re
import signal
import time
from datetime import datetime

import numpy as np

from . import jsonio, record, rundir
from .augment import Augmenter
from .budget import TALLY_EVERY  # (and the divergence check, every TALLY_EVERY batches)
from .checkpoint import check_training_state, load_model, read_checkpoint, save_checkpoint
from .config import describe_network, from_values
from .cpus import usable_cpus
from .data import N_CLASSES, PIXELS, choose_data_dir, seeds, validation_split
from .errors import BpError, CheckpointError, ConfigError, TrainingDiverged
from .fsutil import read_text, shell_word, shown_path, write_text_atomic
from .metrics import loss_and_accuracy
from .fast import Engine, blas
from .fast.parallel.placement import worker_modes
from .fast.parallel.sharding import shards_for
from .fast.parallel.threads import single_threaded_blas
from .reference import ReferenceEngine
from .network import Spec, example_costs, init_params, one_hot
from .optim import learning_rate, make_optimizer
from .progress import Progress, percent

KERNEL_NAME = re.compile(r"[A-Za-z0-9_]{1,40}")  # OpenBLAS's core names: "SkylakeX", "Haswell", "NEOVERSEN1"


class Interrupted(BpError):
    """Ctrl-C or SIGTERM: the run was saved and can be resumed."""

    exit_code = 130

    @classmethod
    def of(cls, run_dir, when):
        return cls(f"interrupted {when}; saved {os.path.join(run_dir, 'last.npz')}. "
                   f"Resume with: bp train --resume {shell_word(run_dir)}")


def spec_of(model):
    """The network a config's model section (``config.Model``) describes."""
    return Spec([PIXELS, *model.hidden, N_CLASSES], model.activation, model.output, model.loss)


#: the signals that stop a run cleanly: Ctrl-C, kill's default, a closed terminal
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def stop_requests(requested=None):
    """Turn SIGINT/SIGTERM/SIGHUP into a flag the loop checks after each step.

    A second Ctrl-C falls back to the default and stops at once; checkpoints
    are written atomically, so even then nothing on disk is half-written.
    ``requested``: a caller's own list of signals, for a caller that must learn of
    a signal the run did not act on (one that came as the run diverged, or in its
    last step): bp tune, which would otherwise start the next trial.
    """
    requested = [] if requested is None else requested

    def handler(signum, frame):
        requested.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    with handling(STOP_SIGNALS, handler):
        yield requested


@contextlib.contextmanager
def handling(signals, handler):
    """``handler`` for ``signals`` during the block, the old handlers back after it. Outside
    the main thread (a test runner's worker, say) Python refuses handlers: the caller's stay."""
    try:
        old = {s: signal.signal(s, handler) for s in signals}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------
# The training loop

#: train.engine -> the class that trains: the same interface (see reference.py), the same weights
ENGINES = {"fast": Engine, "reference": ReferenceEngine}


class Run:
    """The state of one training run: what a checkpoint saves and a resume restores."""

    def __init__(self, cfg, data, run_dir, threads=1):
        self.values, self.recipe = cfg.values, cfg.recipe
        self.run_dir = run_dir
        self.spec = spec_of(self.recipe.model)
        init_rng, _, self.rng = seeds(self.recipe.seed)
        self.train_X, self.train_y, self.val_X, self.val_y = validation_split(data, self.recipe)
        self.test_X, self.test_y = data.test_images, data.test_labels
        t = self.recipe.train
        self.augment = t.augment
        # the engine leaves out of its products the pixels that are 0 in every training
        # image; augmentation moves ink anywhere, and then every pixel takes part
        inked = self.train_X.any(axis=0) | bool(self.augment)
        Ws, bs = init_params(self.spec, init_rng, self.recipe.model.init)
        self.threads = threads
        self.engine = ENGINES[t.engine](self.spec, Ws, bs, lambda theta, n: make_optimizer(t, theta, n),
                                        t.batch_size, inked, threads=threads,
                                        dropout=self.recipe.model.dropout, max_norm=t.max_norm,
                                           rng=self.rng)
        self.train_X = self.engine.inputs_of(self.train_X)
        # two of each batch buffer: the next batch is prepared in one while the engine trains on
        # the other; with augmentation, the engine's workers warp parts of it (``warp``)
        B = t.batch_size
        self.pixels = [self.engine.buffer((B, self.train_X.shape[1]), np.uint8) for _ in range(2)]
        self.augmenter = self.augmented = self.warp_handle = None
        if self.augment:
            self.augmented = [self.engine.buffer((B, PIXELS), np.float32) for _ in range(2)]
            self.augmenter = Augmenter(self.augment, B, out=self.augmented[0], empty=self.engine.buffer)
            self.warp_handle = self.engine.register(self.warp)
        self.epoch = 0            # epochs completed
        self.step = 0             # batches completed in the current epoch
        self.history = []         # one metrics dict per completed epoch
        self.best = None          # (epoch, val_accuracy) of best.npz
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.epoch_rng_state = None
        self.train_seconds = 0.0
        self.init = None          # where the weights came from with --init: {"checkpoint", "epoch"}

    def model_params(self):
        """(Ws, bs) in the true pixel order: what evaluation and checkpoints see."""
        return self.engine.params()

    def warp(self, parity, lo, hi):
        """Rows [lo, hi) of the augmented batch in buffers ``parity``, read at the points that
        ``Augmenter.draw`` drew: a job the engine's workers run, each on rows of its own."""
        a = self.augmenter
        a.bilinear(self.pixels[parity][lo:hi], a.qx[lo:hi], a.qy[lo:hi], self.augmented[parity][lo:hi], lo)

    # -- checkpoints --------------------------------------------------------
    def meta(self):
        return {
            "config": self.values,
            "sizes": self.spec.sizes,
            "epoch": self.epoch,
            "step": self.step,
            "metrics": self.history,
            "best": self.best,
            "partial": self.partial,
            "train_seconds": self.train_seconds,
            "rng": self.rng.bit_generator.state,
            "epoch_rng": self.epoch_rng_state,
            "threads": self.threads,
            # steps (since this process started or resumed the run) by where their shards ran
            "steps_by_workers": self.engine.steps_by_workers,
            "init": self.init,
            "cpu_count": os.cpu_count(),
            "blas": blas.record(),
        }

    def save(self, name, with_optimizer=True):
        Ws, bs = self.model_params()
        save_checkpoint(os.path.join(self.run_dir, name), Ws, bs, self.meta(),
                        self.engine.state() if with_optimizer else None)

    def load_params(self, Ws, bs):
        """Take over weights and biases (a model's, for --init); the optimizer starts afresh."""
        self.engine.load(Ws, bs, self.engine.state())

    def restore(self, path):
        # every array and value is checked against this run before any is taken over
        arrays, meta = read_checkpoint(path, opt_state=self.engine.state())
        if meta["sizes"] != self.spec.sizes:
            raise CheckpointError(f"checkpoint {path} has layer sizes {meta['sizes']}, the config "
                                  f"says {self.spec.sizes}; resume without changing model keys")
        n = len(self.train_y)
        check_training_state(meta, arrays, path, n_train=n,
                             steps_per_epoch=-(-n // self.recipe.train.batch_size))
        try:
            L = len(self.spec.sizes) - 1
            state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
            self.engine.load([arrays[f"W{l}"] for l in range(L)], [arrays[f"b{l}"] for l in range(L)], state)
            self.epoch, self.step = meta["epoch"], meta["step"]
            self.history, self.partial = meta["metrics"], meta["partial"]
            self.best = meta["best"]
            self.train_seconds = meta["train_seconds"]
            self.rng.bit_generator.state = meta["rng"]
            self.epoch_rng_state = meta["epoch_rng"]
            self.init = meta.get("init")
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"checkpoint {path} cannot be resumed ({type(err).__name__}: {err}); "
                                  "it lacks training state (best.npz cannot be resumed: use last.npz)") from None

    def write_metrics(self):
        lines = "".join(jsonio.dumps(m) + "\n" for m in self.history)
        write_text_atomic(os.path.join(self.run_dir, "metrics.jsonl"), lines)

    # -- one epoch ----------------------------------------------------------
    def train_epoch(self, progress, stop):
        """One epoch of mini-batch SGD, from ``self.step`` on (a resumed run starts mid-epoch);
        a stop request saves last.npz after the current step and raises Interrupted."""
        setup = time.perf_counter()  # drawing the order and preparing count as training time
        t, engine = self.recipe.train, self.engine
        epoch = Epoch(self, self.epoch_order())
        self.partial["seconds"] += time.perf_counter() - setup
        progress.start_epoch(self.epoch + 1, t.epochs, epoch.steps, self.step)
        epoch.prepare_first()
        while self.step < epoch.steps:
            t0 = time.perf_counter()
            lr = epoch.lr()
            A = engine.train_batch(epoch.X, epoch.targets_of_step(), lr,
                                   meanwhile=epoch.prepare_next if self.step + 1 < epoch.steps else None)
            while engine.notices:
                progress.warn(engine.notices.pop(0))
            epoch.keep(A)
            if engine.flush_every and self.step % engine.flush_every == 0:
                engine.flush_subnormals()
            self.step += 1
            loss = epoch.tally(lr) if epoch.tally_due() else None
            self.partial["seconds"] += time.perf_counter() - t0
            progress.step(loss)
            if stop and self.step < epoch.steps:
                epoch.tally(lr)
                progress.close()
                epoch.rewind_to_next_batch()
                self.save("last.npz")
                raise Interrupted.of(self.run_dir, f"in epoch {self.epoch + 1}")

    def epoch_order(self):
        """This epoch's order of the training examples: a fresh permutation, or, resuming
        mid-epoch, the same one redrawn (the stream then continues where it was)."""
        n = len(self.train_y)
        if self.step == 0:
            self.epoch_rng_state = self.rng.bit_generator.state
            return self.rng.permutation(n)
        current = self.rng.bit_generator.state
        self.rng.bit_generator.state = self.epoch_rng_state
        perm = self.rng.permutation(n)
        self.rng.bit_generator.state = current
        return perm

    def patience_ran_out(self):
        """Early stopping: the best validation accuracy is train.patience epochs old."""
        patience = self.recipe.train.patience
        if not patience or self.best is None or self.best["val_accuracy"] is None:
            return False
        return self.epoch - self.best["epoch"] >= patience

    # -- divergence ---------------------------------------------------------
    def check_finite(self, lr):
        """Raise TrainingDiverged if any weight or bias is NaN or infinite (Engine.finite)."""
        if not self.engine.finite():
            raise self.diverged("the weights became NaN or infinite", lr)

    def diverged(self, what, lr):
        """The error for a run that diverged, saying what is left of it. Nothing of the
        diverged state is saved: last.npz and best.npz stay those of the last good epoch."""
        last = os.path.join(self.run_dir, "last.npz")
        if self.history and os.path.exists(last):
            kept = (f"the last good checkpoint is {last} (epoch {self.epoch}), "
                    f"and {os.path.join(self.run_dir, 'best.npz')} is still usable")
        else:
            kept = "no epoch had finished, so nothing was saved"
        config_yaml = shell_word(os.path.join(self.run_dir, "config.yaml"))
        again = f"bp train -c {config_yaml} --lr {gentler_lr(self.recipe.train.lr)}"
        return TrainingDiverged(f"training diverged: {what} in epoch {self.epoch + 1} at lr {lr:.4g}; "
                                f"train again with a lower learning rate, e.g. {again}; {kept}")

    def finish_epoch(self, seconds):
        t, p = self.recipe.train, self.partial
        self.check_finite(learning_rate(t, self.epoch + 1 - 1e-9))
        val_loss, val_acc = loss_and_accuracy(*self.model_params(), self.spec, self.val_X, self.val_y,
                                             threads=self.threads)
        if len(self.val_y) and not math.isfinite(val_loss):  # finite weights whose outputs overflow
            raise self.diverged(f"the validation loss became {val_loss}", learning_rate(t, self.epoch))
        self.epoch += 1
        self.train_seconds += p["seconds"]
        m = {
            "epoch": self.epoch,
            "epochs": t.epochs,
            "train_loss": p["loss_sum"] / p["seen"],
            "train_accuracy": p["correct"] / p["seen"],
            "val_loss": None if val_loss != val_loss else val_loss,
            "val_accuracy": None if val_acc != val_acc else val_acc,
            "lr": learning_rate(t, self.epoch - 1),
            "seconds": seconds,
            "train_seconds": p["seconds"],
            "samples_per_second": p["seen"] / p["seconds"] if p["seconds"] else 0.0,
        }
        self.history.append(m)
        self.step = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        return m


class Epoch:
    """One epoch of a Run: its order of examples and their targets, the batches prepared one
    step ahead (while the engine trains on the other buffer), and the tally of the training
    loss and accuracy."""

    def __init__(self, run, perm):
        t = run.recipe.train
        self.run, self.perm, self.t = run, perm, t
        self.B = t.batch_size
        self.steps = -(-len(perm) // self.B)
        # every example's label and target Y in this epoch's order: a batch's are then a slice
        self.labels = run.train_y[perm]
        self.targets = one_hot(self.labels, N_CLASSES)
        if t.label_smoothing:
            self.targets *= 1.0 - t.label_smoothing
            self.targets += t.label_smoothing / N_CLASSES
        self.fixed_lr = learning_rate(t, 0) if t.schedule == "constant" and not t.warmup_epochs else None
        # Training loss and accuracy come from each batch's a[L], kept and tallied every
        # TALLY_EVERY batches in one vectorised pass rather than a few small calls per batch
        self.outputs = np.empty((TALLY_EVERY * self.B, N_CLASSES), dtype=np.float32)
        self.untallied = run.step  # the first batch not yet tallied
        self.X = None              # the next batch to train on, prepared ahead
        self.rng_before_next = None

    def lr(self):
        run = self.run
        return self.fixed_lr or learning_rate(self.t, run.epoch + run.step / self.steps)

    def targets_of_step(self):
        lo = self.run.step * self.B
        return self.targets[lo:lo + len(self.X)]

    # -- the batches: gathered (uint8 stays uint8 until the engine's float32 batch) ------
    def batch(self, step):
        """Batch ``step``'s pixels gathered into the buffers of its parity, and what is
        left to do: with augmentation, its random draws are made here (in step order,
        so that batches are prepared in step order) and the warps returned as parts,
        one per shard, for the engine's workers to share out."""
        run = self.run
        idx = self.perm[step * self.B:(step + 1) * self.B]
        n, parity = len(idx), step % 2
        # mode="clip" writes straight into out (the default, "raise", goes through a copy);
        # a permutation's indices are all in range
        X = np.take(run.train_X, idx, axis=0, out=run.pixels[parity][:n], mode="clip")
        if not run.augmenter:
            return X, []
        run.augmenter.draw(run.rng, n)
        return run.augmented[parity][:n], [(run.warp_handle, parity, lo, hi) if hi > lo else None
                                           for lo, hi in run.engine.split(n)]

    def prepare_first(self):
        self.X, parts = self.batch(self.run.step)
        for part in parts:
            self.run.engine.run_part(part)

    def prepare_next(self):
        """The next batch, while the engine trains on this one; returns the warps to share out."""
        # the random stream as it was before the next batch's draws: what an
        # interruption now saves, so that a resumed run draws them again
        self.rng_before_next = self.run.rng.bit_generator.state if self.run.augmenter else None
        self.X, rest = self.batch(self.run.step + 1)
        return rest

    def rewind_to_next_batch(self):
        """Before saving mid-epoch: the stream as it was before the next batch was drawn."""
        if self.rng_before_next is not None:
            self.run.rng.bit_generator.state = self.rng_before_next

    # -- the tally ------------------------------------------------------------------
    def keep(self, A):
        start = (self.run.step - self.untallied) * self.B
        self.outputs[start:start + len(A)] = A

    def tally_due(self):
        run = self.run
        return run.step - self.untallied == TALLY_EVERY or run.step == self.steps

    def tally(self, lr):
        """The kept batches' loss and accuracy into the run's running sums; the mean loss
        (None when nothing is kept). A loss or weight that is not finite: TrainingDiverged."""
        run, p = self.run, self.run.partial
        rows = slice(self.untallied * self.B, min(run.step * self.B, len(self.labels)))
        A = self.outputs[:rows.stop - rows.start]
        if not len(A):  # nothing since the last tally
            return None
        # every example's C0, added to the running sum batch by batch in step order:
        # the same total whether or not an interruption put a tally in between
        batch_sums = np.add.reduceat(example_costs(A, self.targets[rows], run.spec.output, run.spec.loss),
                                     np.arange(0, len(A), self.B))
        loss = float(batch_sums.sum()) / len(A)
        if not math.isfinite(loss):
            raise run.diverged(f"the loss became {loss}", lr)
        run.check_finite(lr)
        for batch_sum in batch_sums:
            p["loss_sum"] += float(batch_sum)
        p["correct"] += int(np.count_nonzero(A.argmax(axis=1) == self.labels[rows]))
        p["seen"] += len(A)
        self.untallied = run.step
        return loss


def gentler_lr(lr):
    """A learning rate to suggest after ``lr`` failed: a tenth of it, but never above 0.1
    (a tenth of 1e30 would fail the same way), written as --lr reads it."""
    return f"{min(lr / 10, 0.1):g}".replace("e+", "e")


CHANCE_LEVEL = 0.2  # test accuracy below this: the network learned (next to) nothing (10 classes: 0.1)


def initial_model(path, cfg):
    """--init MODEL: the model a new run starts from, checked against the run's config:
    the same layer sizes and activation (the optimizer starts afresh)."""
    from .rundir import locate_model

    ckpt, _ = locate_model(path)
    model = load_model(ckpt)
    spec = spec_of(cfg.recipe.model)
    if model.spec.sizes != spec.sizes or model.spec.activation != spec.activation:
        raise ConfigError(f"--init {shown_path(path)} is a {describe_network(model.spec.sizes, model.spec.activation)} "
                          f"network, the config asks for {describe_network(spec.sizes, spec.activation)}; "
                          "fine-tuning needs the same model.hidden and model.activation")
    return ckpt, model


def describe(cfg, run_dir, threads):
    """The first note of a run: its dir, network, epochs, where its shards run, the BLAS path."""
    recipe = cfg.recipe
    spec = spec_of(recipe.model)
    batch, epochs = recipe.train.batch_size, recipe.train.epochs
    on = f"{threads} thread{'s' * (threads != 1)}"
    if recipe.train.engine == "reference":
        on = "1 thread (the reference engine trains on bp itself)"
    else:
        used = shards_for(threads, batch, spec.sizes)
        if used < threads:
            on += f" ({used} used: a batch of {batch} is too small to split further)"
        workers = worker_modes()[0]  # processes or threads (the engine may fall back), or serial
        if used > 1 and workers == "serial":
            on += " (their shards one after another on bp itself: BP_WORKERS=serial)"
        elif used > 1:
            on += f" on worker {workers}"
    network = describe_network(spec.sizes, spec.activation, spec.output, spec.loss)
    return f"run dir {run_dir}: {network}, {epochs} epoch{'s' * (epochs != 1)}, {on}, {blas.describe()}"


def train(cfg, data, run_dir, resume_from=None, progress=None, threads=None, init=None, latest=True, stop=None):
    """Train under ``cfg`` into ``run_dir``; returns the summary ``bp train --json`` prints.

    The run dir is held (``rundir.lock``) throughout; its record (``record.py``)
    says how the run ended (finished with this summary, interrupted, diverged)
    before this returns or raises. ``threads``: the engine's worker threads (None:
    the count the checkpoint resumed from recorded, else every CPU this process may
    use; see ``choose_threads``), recorded in every checkpoint. ``init`` is
    ``(checkpoint path, Model)`` to start from (``initial_model``), for a new run
    only. ``latest``: whether the run becomes ``runs/latest`` once it has a model
    (a user's run does; a bp tune trial does not). ``stop``: a list the signals that
    stop the run are added to (see ``stop_requests``).
    """
    progress = progress or Progress(quiet=True)
    threads, threads_warning = choose_threads(threads, resume_from)
    progress.note(describe(cfg, run_dir, threads))
    for warning in (threads_warning, kernel_warning(resume_from)):
        if warning:
            progress.warn(warning)
    with rundir.held(run_dir), single_threaded_blas():
        run = Run(cfg, data, run_dir, threads)
        try:
            if resume_from:
                run.restore(resume_from)
            elif init:
                ckpt, model = init
                run.load_params(model.Ws, model.bs)
                run.init = {"checkpoint": os.path.realpath(ckpt), "epoch": model.meta.get("epoch")}  # not via latest
            # on resume too when --epochs extended the run: config.yaml says what the run is
            config_path, text = os.path.join(run_dir, "config.yaml"), cfg.to_yaml()
            if not resume_from or read_text(config_path, 1 << 16) != text:
                write_text_atomic(config_path, text)
            log = RunLog(run, resumed=bool(resume_from))
            log.write(record.RUNNING)
            try:
                summary = _train_epochs(run, progress, log, latest, stop)
            except (Interrupted, TrainingDiverged) as err:
                log.write(record.INTERRUPTED if isinstance(err, Interrupted) else record.DIVERGED, error=str(err))
                raise
            except BaseException as err:  # a full disk, a bug: the run says it did not end well
                with contextlib.suppress(BpError, OSError):
                    log.write(record.FAILED, error=str(err) or type(err).__name__)
                raise
            log.write(record.FINISHED, **summary)
        finally:
            run.engine.close()
    return summary


class RunLog:
    """The run's record as one part of it (a first start or a resume) keeps it: when the
    run first started, and the time trained in every part so far."""

    def __init__(self, run, resumed):
        before = record.read(run.run_dir) if resumed else None
        self.run = run
        self.started = record.text(before, "started") or datetime.now().isoformat(timespec="seconds")
        self.earlier_seconds = record.number(before, "total_seconds") or 0.0
        self.t0 = time.perf_counter()

    def write(self, state, **fields):
        run = self.run
        record.write(run.run_dir, state, started=self.started,
                     total_seconds=self.earlier_seconds + time.perf_counter() - self.t0,
                     epochs_done=run.epoch, epochs_planned=run.recipe.train.epochs, init=run.init, **fields)


def _finished(run_dir):
    """Whether the run's record says it finished (all its epochs, or stopped early)."""
    return record.state(record.read(run_dir)) == record.FINISHED


def choose_threads(asked, resume_from=None):
    """(threads, warning or None): the count asked for; else, on --resume, the count the
    run was trained with (bit-exact resume needs it); else every usable CPU."""
    recorded = None
    if resume_from:
        _, meta = read_checkpoint(resume_from, arrays=False)
        recorded = meta.get("threads")
        if not (isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1):
            recorded = None  # (a bad value is Run.restore's clean error, once the run is held)
    if asked is None:
        return recorded or usable_cpus(), None
    if recorded is not None and asked != recorded:
        return asked, (f"warning: this run was trained on {recorded} thread{'s' * (recorded != 1)}; "
                       f"resuming on {asked} continues it, but not bit for bit as an uninterrupted run "
                       f"(that needs --threads {recorded})")
    return asked, None


def kernel_warning(resume_from):
    """A warning, or None: resuming on other BLAS kernels than the run trained on (``blas.kernel``)
    continues it, but its sums round otherwise from here on. Checkpoints written before bp
    recorded the kernels, and kernels that cannot be told, say nothing."""
    if not resume_from:
        return None
    _, meta = read_checkpoint(resume_from, arrays=False)
    recorded = meta.get("blas")
    recorded = recorded.get("kernel") if isinstance(recorded, dict) else None
    if not (isinstance(recorded, str) and KERNEL_NAME.fullmatch(recorded)):
        return None  # (a checkpoint's text is shown only when it looks like a kernel's name)
    current = blas.kernel()
    if current is None or current == recorded:
        return None
    return (f"warning: this run was trained on OpenBLAS's {recorded} kernels, this process has {current}; "
            f"resuming continues it, but not bit for bit as an uninterrupted run (that needs the same "
            f"kernels: OPENBLAS_CORETYPE={recorded}, where this CPU can run them)")


def _train_epochs(run, progress, log, latest, requested=None):
    run_dir, epochs = run.run_dir, run.recipe.train.epochs
    wall0 = time.perf_counter()
    # overflow to inf/nan is detected as divergence (Run.check_finite), not warned about per step
    with stop_requests(requested) as stop, np.errstate(over="ignore", invalid="ignore", under="ignore"):
        while run.epoch < epochs and not run.patience_ran_out():
            t0 = time.perf_counter()
            try:
                run.train_epoch(progress, stop)
            finally:
                progress.close()
            m = run.finish_epoch(time.perf_counter() - t0)
            progress.end_epoch(m)
            improved = run.best is None or (m["val_accuracy"] is not None
                                            and m["val_accuracy"] > run.best["val_accuracy"])
            if m["val_accuracy"] is None or improved:
                run.best = {"epoch": m["epoch"], "val_accuracy": m["val_accuracy"]}
            run.save("last.npz")
            if run.best["epoch"] == m["epoch"]:
                first_model = not os.path.exists(os.path.join(run_dir, "best.npz"))
                run.save("best.npz", with_optimizer=False)
                if first_model and latest:
                    rundir.point_latest(run_dir)  # latest: the newest run that has a model
            run.write_metrics()
            log.write(record.RUNNING)  # the time so far, should this process be killed
            if run.patience_ran_out():
                progress.note(f"early stop: no better validation accuracy for "
                              f"{run.recipe.train.patience} epochs")
                break
            if stop and run.epoch < epochs:
                raise Interrupted.of(run_dir, f"after epoch {run.epoch}")
    best = load_model(os.path.join(run_dir, "best.npz"))
    _, test_acc = loss_and_accuracy(best.Ws, best.bs, run.spec, run.test_X, run.test_y, threads=run.threads)
    progress.note(f"best epoch {run.best['epoch']}: val {percent(run.best['val_accuracy'])}, "
                  f"test {percent(test_acc)}  ->  {os.path.join(run_dir, 'best.npz')}")
    return {
        "run_dir": run_dir,
        "epochs": run.epoch,
        "best_epoch": run.best["epoch"],
        "val_accuracy": run.best["val_accuracy"],
        "test_accuracy": test_acc,
        "seconds": time.perf_counter() - wall0,
        "train_seconds": run.train_seconds,
        "samples_per_second": (len(run.history) * len(run.train_y) / run.train_seconds
                               if run.train_seconds else 0.0),
        "threads": run.threads,
    }


def resume_config(ckpt, flags):
    """The config to continue a run with: its own, where flags may only extend train.epochs."""
    _, meta = read_checkpoint(ckpt, arrays=False)  # config checked; Run.restore reads the arrays
    cfg = from_values(meta["config"], f"{ckpt}")
    epochs = cfg.recipe.train.epochs
    # a checkpoint never decides where bp downloads (data.choose_data_dir; --data-dir is applied after)
    folder, source = choose_data_dir(cfg.recipe.data.dir, dataset=cfg.recipe.data.dataset)
    if source != "recorded":
        cfg.set("data.dir", folder, source)
    for path, value in flags.items():
        if value is None:
            continue
        if path != "train.epochs":
            raise ConfigError(f"--resume continues a run with its own config; only --epochs may be "
                              f"given with it (got a value for '{path}')")
        if value < epochs:
            raise ConfigError(f"--epochs {value} is fewer than the run's {epochs}; "
                              "--resume may only extend train.epochs")
        cfg.set(path, value, "flag --epochs")
    run_dir = os.path.dirname(os.path.abspath(ckpt))
    epoch = meta.get("epoch")  # (a tampered one is left to Run.restore's full check)
    if flags.get("train.epochs") is None and _finished(run_dir) and type(epoch) is int and epoch > 0:
        raise ConfigError(f"run {shown_path(run_dir)} has finished ({epochs} epochs): nothing to resume; extend "
                          f"it with bp train --resume {shell_word(run_dir)} --epochs {2 * epochs} (any number above "
                          f"{epochs}), or start a new run from its weights with bp train --init {shell_word(run_dir)}")
    return cfg
