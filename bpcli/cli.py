"""bp's command line: thin commands that parse, call the library, and render.

Kept cheap to import (``bp --help`` must be instant): numpy, requests and
Pillow are imported inside the commands that need them. The library raises
``BpError``; ``main`` turns it into one ``Error: …`` line and its exit code.
"""

import errno
import os
import signal
import sys

import click

from . import __version__, datadir
from .cpus import set_blas_threads
from .errors import BpError


INTERRUPTED = 130


class BpGroup(click.Group):
    """A click group that renders bp's own errors as ``Error: …`` with their exit code.

    Also the edges of a process: Ctrl-C or SIGTERM anywhere (a download, a data
    load, a prediction) is one line and exit 130, not click's "Aborted!" and 1;
    a message is always one line, whatever a file name holds.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BpError as err:
            raise _exception(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            raise _exception("interrupted; nothing was left half-written (files are written whole or "
                             "not at all)", INTERRUPTED) from None
        except click.ClickException as err:  # click's own usage errors echo the user's value
            from .fsutil import truncate

            err.message = truncate(" ".join(str(err.message).splitlines()), 300)
            raise

    def main(self, *args, **kwargs):
        """click's main, then stdout flushed while an error can still be reported:
        output to a full device (``> /dev/full``) is an ``Error:`` line and exit 1,
        not a traceback at interpreter exit."""
        code = 0
        if sys.stderr is None:  # started with stderr closed: notes go nowhere, never into stdout
            sys.stderr = open(os.devnull, "w")
        closed_stdout = sys.stdout is None
        if closed_stdout:
            sys.stdout = open(os.devnull, "w")
        try:
            super().main(*args, **kwargs)
        except SystemExit as exit_:
            code = exit_.code
        except KeyboardInterrupt:  # an interrupt outside a command's own code (parsing, an error's echo)
            click.echo("Error: interrupted", err=True)
            code = INTERRUPTED
        except OSError as err:  # click.echo failing mid-command on a closed or full stdout
            code = _output_failed(err)
        try:
            sys.stdout.flush()
        except OSError as err:
            code = _output_failed(err)
        if closed_stdout and code == 0:
            click.echo("Error: cannot write the output: standard output is closed", err=True)
            code = 1
        sys.exit(code)


def _exception(message, exit_code):
    exc = click.ClickException(" ".join(message.splitlines()))
    exc.exit_code = exit_code
    return exc


def _output_failed(err):
    # the rest of stdout cannot be written either: send it nowhere, so that
    # Python's own flush at exit does not print a traceback
    sys.stdout = open(os.devnull, "w")
    if getattr(err, "errno", None) == errno.EPIPE:  # `bp … | head`: the reader has all it wants
        return 1
    click.echo(f"Error: cannot write the output: {err.strerror or err}", err=True)
    return 1


SHOWN_DATA_DIR = os.path.join(".", datadir.DEFAULT)  # as --data-dir's help shows the default


def _data_dir_option(default=SHOWN_DATA_DIR):
    # $BP_DATA_DIR is read in one place, where the rule lives (bpcli/datadir.py)
    return click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                        help=f"Where the data is cached (default: $BP_DATA_DIR, else {default}).")


# a checkpoint's recorded data dir is untrusted: only read, never written to
RUN_DATA_DIR = f"{SHOWN_DATA_DIR}; the run's own data dir is read if it already holds the verified files"


def _fetch_options(f):
    """--mirror and --offline, for every command that may fetch data."""
    f = click.option("--offline", is_flag=True,
                     help="Never open a connection ($BP_OFFLINE=1); fail on missing files.")(f)
    f = click.option("--mirror", "mirrors", multiple=True, metavar="URL|DIR",
                     help="Fetch from this base URL or local folder instead of the built-in list "
                          "(repeatable; also $BP_MNIST_MIRROR, comma-separated; "
                          "$BP_FASHION_MNIST_MIRROR, $BP_KMNIST_MIRROR for the others).")(f)
    return f


def _fetching(mirrors, offline):
    """ensure_mnist's mirrors and offline from the flags: None lets the environment decide."""
    return {"mirrors": list(mirrors) or None, "offline": True if offline else None}


def _emit_json(doc):
    from .jsonio import dumps

    click.echo(dumps(doc, indent=2))


@click.group(cls=BpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bp")
def cli():
    """bp: train a NumPy multilayer perceptron on MNIST by backpropagation."""


@cli.command()
@_data_dir_option()
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist", "kmnist"]), default="mnist",
              show_default=True, help="Which dataset (config data.dataset); each has its own folder and mirrors.")
@_fetch_options
@click.option("--force", is_flag=True, help="Fetch again even if the cache is valid.")
def download(data_dir, dataset, mirrors, offline, force):
    """Download and verify MNIST (or --dataset) into the data dir."""
    from . import download as dl

    paths = dl.ensure_mnist(datadir.choose(data_dir)[0], dataset=dataset, force=force, **_fetching(mirrors, offline))
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


def _threads_option(f):
    return click.option("--threads", type=click.IntRange(1, 256), default=None, metavar="N",
                        help="Training threads, each on its share of every mini-batch (default: the CPUs "
                             "this process may use; on --resume, the count the run was trained with).")(f)


def _blas_threads_env_to_one():
    """BLAS in the caller's thread: bp's engine runs its own threads, and a BLAS thread
    pool that spins while it waits would fight them (and any other process) for the cores.
    Set before numpy is first imported, which in bp happens inside the commands, after this."""
    set_blas_threads(1)


def _complete_keys(ctx, param, incomplete):
    """Shell completion of --set: every config key, ready for its value."""
    from click.shell_completion import CompletionItem

    from .config import RULES

    return [CompletionItem(f"{key}=", type="plain") for key in RULES if key.startswith(incomplete)]


def _config_options(f):
    f = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", shell_complete=_complete_keys,
                     help="Override any config key, value parsed as YAML (repeatable): "
                          "--set model.hidden=[64,32]")(f)
    f = click.option("-c", "--config", "config_file", type=click.Path(dir_okay=True), default=None,
                     help="YAML file of overrides, or a built-in recipe's name (bp config --list).")(f)
    return f


def _hidden(value):
    """'256,128' -> [256, 128] for --hidden; '' -> [] (no hidden layer)."""
    from .errors import ConfigError
    from .fsutil import shown_path

    if value is None:
        return None
    text = value.replace(" ", "")
    try:
        return [int(v) for v in text.split(",")] if text else []
    except ValueError:  # (an empty item too: '1,,2' is a typo, not [1, 2])
        raise ConfigError(f"--hidden expects comma-separated layer sizes like 256,128, "
                          f"got '{shown_path(value, 60)}'") from None


class Finite(click.FloatRange):
    """A float option that must be a finite number, optionally in a range (FloatRange's
    arguments). click's FloatRange lets nan through (every comparison with nan is
    false) and, without bounds, inf: as a gate or a tolerance either passes anything."""

    name = "float"

    def convert(self, value, param, ctx):
        import math

        from .fsutil import shown_path

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"'{shown_path(str(value), 40)}' is not a number.", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


#: train's named flags: each a shorthand for one config key, its help that key's (config.KEYS)
NAMED_FLAGS = {"--seed": ("seed", int, None), "--hidden": ("model.hidden", str, "256,128"),
               "--lr": ("train.lr", "number", None), "--batch-size": ("train.batch_size", int, None),
               "--epochs": ("train.epochs", int, None), "--engine": ("train.engine", "choice", None)}


def _named_flags(f):
    """train's named flags (bp config takes them too), declared in NAMED_FLAGS."""
    from .config import BY_PATH

    for flag, (path, kind, metavar) in reversed(NAMED_FLAGS.items()):
        key = BY_PATH[path]
        if kind == "choice":
            kind = click.Choice(key.rule.options)
        elif kind == "number":
            kind = Finite()  # parsed here; its range is the key's rule (config.KEYS), checked by resolve
        f = click.option(flag, type=kind, default=None, metavar=metavar,
                         help=f"{path}: {key.help.split(' ([')[0]}")(f)
    return f


def _flags(**given):
    """The named flags, by their parameter names (``batch_size=``), as config keys (None: not given)."""
    path = {flag[2:].replace("-", "_"): key for flag, (key, _, _) in NAMED_FLAGS.items()}
    return {path[name]: _hidden(value) if name == "hidden" else value for name, value in given.items()}


@cli.command()
@_config_options
@_named_flags
@click.option("--run-dir", type=click.Path(), default=None,
              help="Where to write the run (default: $BP_RUNS_DIR or ./runs, then a timestamp).")
@click.option("--resume", type=click.Path(exists=False), default=None, metavar="RUN_DIR|CKPT",
              help="Continue a run in place from its last.npz (its config, its RNG state).")
@click.option("--init", "init_model", type=click.Path(), default=None, metavar="MODEL",
              help="Start a new run from this model's weights (a run dir or checkpoint; the config's "
                   "network must match), with a fresh optimizer: fine-tuning.")
@click.option("--force", is_flag=True, help="Overwrite an existing --run-dir.")
@_data_dir_option()
@_fetch_options
@_threads_option
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with the results.")
def train(config_file, sets, epochs, batch_size, lr, hidden, seed, engine, run_dir, resume, init_model, force, data_dir,
          mirrors, offline, threads, quiet, as_json):
    """Train an MLP on MNIST by backprop and mini-batch SGD."""
    _blas_threads_env_to_one()
    from . import launch
    from . import train as train_mod
    from .progress import Progress

    flags = _flags(epochs=epochs, batch_size=batch_size, lr=lr, hidden=hidden, seed=seed, engine=engine)
    plan = launch.plan(config_file, sets, flags, run_dir, resume, init_model, force, data_dir)
    data = launch.load_data(plan.cfg, progress=False if quiet else None, **_fetching(mirrors, offline))
    summary = launch.start(plan, data, Progress(quiet=quiet), threads)
    lr = plan.cfg.recipe.train.lr
    if summary["test_accuracy"] < train_mod.CHANCE_LEVEL:  # loud even with --quiet: exit 0 hides it
        click.echo(f"Warning: test accuracy {summary['test_accuracy']:.1%} is chance level: the network learned "
                   f"nothing. Is the learning rate ({lr:g}) too high? Try --lr {train_mod.gentler_lr(lr)}", err=True)
    if as_json:
        _emit_json(summary)
    else:
        from .fsutil import shown_path

        click.echo(f"test accuracy {summary['test_accuracy']:.4f} (best epoch {summary['best_epoch']}), "
                   f"run dir {shown_path(summary['run_dir'])}")


@cli.command("config")
@_config_options
@_named_flags
@click.option("--sources", is_flag=True, help="Comment each value with where it came from.")
@click.option("--list", "list_recipes", is_flag=True, help="List the built-in recipes (-c NAME) instead.")
@click.option("--keys", "list_keys", is_flag=True, help="Print every config key, what it accepts, its default and "
                                                         "what it does (a Markdown table) instead.")
def config_cmd(config_file, sets, epochs, batch_size, lr, hidden, seed, engine, sources, list_recipes, list_keys):
    """Print the effective config as YAML (defaults < file < --set < named flags): what
    `bp train` with the same arguments would run. -c takes a file or a built-in recipe's name."""
    from . import config as config_mod

    if list_keys:
        click.echo(config_mod.key_reference())
        return
    if list_recipes:
        rows = config_mod.recipe_table()
        width = max(len(r["network"]) for r in rows)
        click.echo(f"{'recipe':<14}{'network':<{width + 2}}{'parameters':>11}{'epochs':>8}  measured")
        for r in rows:
            click.echo(f"{r['name']:<14}{r['network']:<{width + 2}}{r['parameters']:>11,}{r['epochs']:>8}  "
                       f"{r['measured'] or '-'}{'  (augmented)' if r['augmented'] else ''}")
        click.echo("\nbp train -c NAME trains one; bp train with no -c trains 'default'.")
        return
    cfg = config_mod.resolve(config_file, sets, _flags(epochs=epochs, batch_size=batch_size, lr=lr, hidden=hidden,
                                                       seed=seed, engine=engine))
    click.echo(cfg.to_yaml(with_sources=sources), nl=False)


@cli.command()
@_config_options
@click.option("--tolerance", type=Finite(0), default=1e-6, show_default=True,
              help="Largest acceptable relative error.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (exit 1 still when it fails).")
def gradcheck(config_file, sets, tolerance, as_json):
    """Check backprop against finite differences on a small net built from the config."""
    from . import config as config_mod
    from .gradcheck import check_model

    cfg = config_mod.resolve(config_file, sets)
    result = check_model(cfg.recipe.model)
    worst = result["max_error"]
    result.update(tolerance=tolerance, ok=bool(worst <= tolerance))
    if as_json:
        _emit_json(result)
    else:
        click.echo(f"network {'-'.join(map(str, result['sizes']))} "
                   f"({result['activation']}, {result['output']} + {result['loss']}), float64, "
                   f"{result['n']} examples")
        for layer in result["layers"]:
            click.echo(f"layer {layer['layer']}: max relative error W {layer['W']:.2e}  b {layer['b']:.2e}")
    if not result["ok"]:
        raise click.ClickException(f"backprop disagrees with finite differences: max relative error "
                                   f"{worst:.2e} > {tolerance:g}")
    if not as_json:
        click.echo(f"ok: max relative error {worst:.2e} <= {tolerance:g}")


def _locate(path):
    """(checkpoint, run dir) a MODEL argument names (rundir.locate_model); when the
    default (runs/latest) was used, say which run that is."""
    from .fsutil import shown_path
    from .rundir import latest_link, locate_model

    ckpt, run_dir = locate_model(path)
    if path is None:
        click.echo(f"model: {shown_path(os.path.realpath(ckpt))} ({shown_path(latest_link())})", err=True)
    return ckpt, run_dir


def _load_model(path):
    """The model a MODEL argument names, loaded (see _locate)."""
    from .checkpoint import load_model

    ckpt, _ = _locate(path)
    return ckpt, load_model(ckpt)


def _load_page_model(path):
    """_load_model for the web page: a model too big for the page is refused from its
    metadata, before its weights take memory."""
    from .checkpoint import load_model
    from .web import check_checkpoint

    ckpt, _ = _locate(path)
    check_checkpoint(ckpt)
    return ckpt, load_model(ckpt)


@cli.command()
@click.argument("checkpoint", metavar="[MODEL]", required=False, type=click.Path())
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True,
              help="val and train are the run's own split (its seed and data.validation).")
@_data_dir_option(default=RUN_DATA_DIR)
@_fetch_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--min-accuracy", type=Finite(0, 1), default=None, metavar="X",
              help="Exit 3 if overall accuracy is below X (a fraction).")
@click.option("--min-digit-accuracy", type=Finite(0, 1), default=None, metavar="X",
              help="Exit 3 if any digit's accuracy is below X.")
def evaluate(checkpoint, split, data_dir, mirrors, offline, as_json, min_accuracy, min_digit_accuracy):
    """Score a checkpoint: accuracy, per-digit table, confusion matrix.

    MODEL is a run dir (its best.npz) or a checkpoint file; default: runs/latest.
    """
    from .evaluate import evaluate_checkpoint, gate_failures, render_report

    path, model = _load_model(checkpoint)
    doc = evaluate_checkpoint(path, model, split, data_dir=data_dir, **_fetching(mirrors, offline))
    if as_json:
        _emit_json(doc)
    else:
        click.echo(render_report(doc))
    failures = gate_failures(doc, min_accuracy, min_digit_accuracy)
    if failures:
        from .errors import GateFailed

        raise GateFailed("; ".join(failures))


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--model", "checkpoint", type=click.Path(), default=None, metavar="MODEL",
              help="A run dir (its best.npz) or a checkpoint file (default: runs/latest).")
@click.option("--top", type=click.IntRange(1, 10), default=1, show_default=True, help="Show the K most likely digits.")
@click.option("--show", is_flag=True, help="Print the 28x28 input the model saw, as ASCII art.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list, an object per image.")
def predict(images, checkpoint, top, show, as_json):
    """Classify your own digit images (PNG, JPEG, BMP, GIF, TIFF, WebP).

    IMAGE is a picture file, a folder (its pictures, sorted by name) or - (a picture on
    standard input)."""
    from .predict import predict_images

    _, model = _load_model(checkpoint)
    results, inputs = predict_images(model, images)
    failed = [r for r in results if r["digit"] is None]
    if as_json:
        _emit_json(results)
    else:
        from .datasets import of_config
        from .fsutil import shown_path
        from .image import ascii_art

        for r, x in zip(results, inputs):
            if r["digit"] is None:
                click.echo(f"Error: {r['error']}", err=True)
                continue
            names = of_config(model.meta.get("config", {})).classes
            ranked = sorted(range(10), key=lambda d: -r["probabilities"][d])[:top]
            others = "".join(f", {names[d]} ({r['probabilities'][d]:.1%})" for d in ranked[1:])
            flag = "  uncertain" if r["uncertain"] else ""
            click.echo(f"{shown_path(r['image'])}: {r['label']} ({r['confidence']:.1%}){others}{flag}")
            if show:
                click.echo(ascii_art(x))
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("image", required=False, type=click.Path())
@click.option("--index", type=click.IntRange(0), default=None, metavar="N",
              help="Explain MNIST image N of --split instead of an image file.")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="Where --index and the zoom-out batch come from.")
@click.option("--model", "checkpoint", type=click.Path(), default=None, metavar="MODEL",
              help="A run dir (its best.npz) or a checkpoint file (default: runs/latest).")
@click.option("--target", type=click.IntRange(0, 9), default=None, metavar="D",
              help="The digit the output should be (default: the true digit with --index, else the prediction).")
@click.option("--top", type=click.IntRange(1, 100), default=5, show_default=True,
              help="How many weights, units and gradient components to list.")
@click.option("--batch", type=click.IntRange(0), default=64, show_default=True, metavar="N",
              help="Zoom-out mini-batch of N images of all digits (0: skip it; an IMAGE then needs no MNIST).")
@click.option("--lr", type=Finite(0, min_open=True), default=None,
              help="Step size of the zoom-out SGD step (default: the checkpoint's train.lr).")
@_data_dir_option(default=RUN_DATA_DIR)
@_fetch_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def explain(image, index, split, checkpoint, target, top, batch, lr, data_dir, mirrors, offline, as_json):
    """See backprop: how one example wants each weight and bias to move, then a mini-batch.

    IMAGE is your own digit picture; or pass --index N for an MNIST image.
    """
    from .explain import explain_model, render_text, stream_is_unicode

    path, model = _load_model(checkpoint)
    doc = explain_model(model, path, image=image, index=index, split=split, target=target, top=top,
                        batch=batch, lr=lr, data_dir=data_dir, **_fetching(mirrors, offline))
    if as_json:
        _emit_json(doc)
    else:
        click.echo(render_text(doc, unicode=stream_is_unicode(sys.stdout)))


@cli.command()
@click.argument("model", metavar="[MODEL]", required=False, type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where to write the PNG files (default: the run dir's plots/).")
@_data_dir_option(default=RUN_DATA_DIR)
@_fetch_options
def plot(model, out_dir, data_dir, mirrors, offline):
    """Draw a run as PNG files: learning curves, first-layer weights, confusion matrix, mistakes.

    MODEL is a run dir or a checkpoint file in one (its run's curves, that
    checkpoint's pictures); default: runs/latest. Needs matplotlib: pip install -e '.[plot]'.
    """
    from .plot import plot_run

    checkpoint, run_dir = _locate(model)
    for picture in plot_run(run_dir, out_dir, checkpoint=checkpoint, data_dir=data_dir,
                            **_fetching(mirrors, offline)):
        click.echo(f"{picture['path']} ({picture['width']}x{picture['height']})")


@cli.command("runs")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list, an object per run.")
def runs_cmd(as_json):
    """List the runs under the runs root ($BP_RUNS_DIR or ./runs), newest first."""
    from .rundir import runs_root
    from .runs import list_runs, render

    runs = list_runs()
    if as_json:
        _emit_json(runs)
    else:
        click.echo(render(runs, runs_root()))


def _train_sample_option(f):
    from .websample import DEFAULT_TRAIN_SAMPLE, MAX_TRAIN_SAMPLE

    return click.option("--train-sample", type=click.IntRange(0, MAX_TRAIN_SAMPLE), default=None, metavar="N",
                        help=f"With --web: MNIST training images the page's Train panel trains on (about 1 KB each; "
                             f"plus up to 1,000 test images held out; default {DEFAULT_TRAIN_SAMPLE:,}, or none "
                             "when MNIST is not in the data dir); 0: no Train panel.")(f)


def _page_parts(checkpoint, n, data_dir):
    """(checkpoint path, model, the Train panel's sample or None) for --web and serve: the
    model checked for the page first, then its sample from the data dir (never downloaded).
    Without MNIST at hand, a sample asked for (--train-sample N) is an error; the default
    leaves the panel out and says so."""
    from .errors import DataError
    from .web import check_page_model
    from .websample import DEFAULT_TRAIN_SAMPLE, load_sample

    path, model = _load_page_model(checkpoint)
    check_page_model(model, path, data_dir)
    try:
        return path, model, load_sample(model, DEFAULT_TRAIN_SAMPLE if n is None else n, data_dir)
    except DataError as err:
        if n is not None:
            raise
        click.echo(f"note: no Train panel: {err}", err=True)
        return path, model, None


@cli.command("export")
@click.argument("checkpoint", metavar="[MODEL]", required=False, type=click.Path())
@click.option("--onnx", "onnx_file", type=click.Path(), default=None, metavar="FILE",
              help="Write the model as an ONNX graph (needs pip install -e '.[export]').")
@click.option("--web", "web_dir", type=click.Path(), default=None, metavar="DIR",
              help="Write a static web page (index.html and the weights) into DIR that shows backprop "
                   "on the model as you draw a digit; open it from disk.")
@click.option("--force", is_flag=True, help="Overwrite an existing FILE or DIR.")
@_data_dir_option(default=RUN_DATA_DIR)
@_train_sample_option
def export_cmd(checkpoint, onnx_file, web_dir, force, data_dir, train_sample):
    """Take the model elsewhere: an ONNX file, or a web page.

    MODEL is a run dir (its best.npz) or a checkpoint file; default: runs/latest.
    The ONNX file is checked and, with onnxruntime installed, verified against
    bp on MNIST's test images (from the data dir) before it is written.
    """
    if (onnx_file is None) == (web_dir is None):
        raise click.UsageError("give exactly one of --onnx FILE or --web DIR")
    if onnx_file is not None and train_sample is not None:
        raise click.UsageError("--train-sample N is for the page's Train panel: give it with --web DIR")
    if onnx_file is not None:
        from .export import check_output, export_onnx
        from .fsutil import shown_path

        check_output(onnx_file, force)  # before the model is loaded: a usage error comes first
        path, model = _load_model(checkpoint)
        report = export_onnx(model, path, onnx_file, force=force, data_dir=data_dir)
        click.echo(f"wrote {shown_path(onnx_file)} ({report['bytes'] / 1e6:.1f} MB): {report['network']}, "
                   f"ONNX opset {report['opset']}")
        click.echo("checked: onnx.checker (full check, shape inference included) passed")
        verified = report["verified"]
        if verified is None:
            click.echo("not verified: onnxruntime is not installed (pip install onnxruntime) to compare "
                       "its outputs with bp's")
        else:
            click.echo(f"verified: onnxruntime {verified['onnxruntime']} gives bp's digit for all "
                       f"{verified['images']}, probabilities within {verified['max_difference']:.1e} "
                       f"(tolerance 1e-05)")
        if report["test_accuracy"] is not None:
            click.echo(f"test accuracy {report['test_accuracy']:.4f} (in the file's metadata)")
    else:
        from .fsutil import shown_path
        from .web import check_output as check_site, write_site

        check_site(web_dir, force)  # before the model is loaded, as for --onnx
        path, model, sample = _page_parts(checkpoint, train_sample, data_dir)
        for written in write_site(model, path, web_dir, force=force, sample=sample, checked=True):
            click.echo(shown_path(written))  # one line a file, whatever the folder's name holds



@cli.command()
@click.argument("checkpoint", metavar="[MODEL]", required=False, type=click.Path())
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: a free one).")
@_data_dir_option(default=RUN_DATA_DIR)
@_train_sample_option
def serve(checkpoint, port, data_dir, train_sample):
    """Serve the backprop web page for MODEL on 127.0.0.1 until Ctrl-C.

    MODEL is a run dir (its best.npz) or a checkpoint file; default: runs/latest.
    """
    from .fsutil import shown_path
    from .web import serve as serve_site

    signal.signal(signal.SIGHUP, _terminate)  # the terminal closed: stop as on Ctrl-C
    path, model, sample = _page_parts(checkpoint, train_sample, data_dir)
    try:
        serve_site(model, path, port, announce=lambda url: click.echo(
            f"serving the page for {shown_path(path)} on {url} (Ctrl-C stops)"), sample=sample, checked=True)
    except KeyboardInterrupt:  # the way to stop a server: not an error, but still exit 130
        click.echo("stopped serving", err=True)
        sys.exit(INTERRUPTED)


@cli.command()
@_config_options
@click.option("--space", "space_file", type=click.Path(dir_okay=True), required=True, metavar="SPACE.yaml",
              help="Config keys to search, e.g. 'train.lr: {low: 0.01, high: 0.5, log: true}' "
                   "(see configs/spaces/).")
@click.option("--trials", type=click.IntRange(1, 100_000), default=20, show_default=True, metavar="N",
              help="Finished (complete or pruned) trials the study should reach, across all workers.")
@click.option("--timeout", type=Finite(0, min_open=True), default=None, metavar="S",
              help="Start no new trial after S seconds (running ones finish).")
@click.option("--workers", type=click.IntRange(1, 256), default=1, show_default=True, metavar="K",
              help="Worker processes on this machine, each training on cpus/K threads.")
@click.option("--storage", default=None, metavar="URL",
              help="Study database shared by many machines, e.g. postgresql://user@host/db "
                   "(default: SQLite in the study folder).")
@click.option("--study", default=None, metavar="NAME",
              help="Study name (default: the space file's name); the same name continues a study.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="Sampler seed (worker k uses seed + k); give each machine its own.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document with the study's results.")
def tune(config_file, sets, space_file, trials, timeout, workers, storage, study, seed, quiet, as_json):
    """Search hyperparameters with Optuna: each trial is a bp run, scored on validation accuracy.

    Needs the tune extra: pip install -e '.[tune]'.
    """
    from .tune import tune as run_tune
    from .tune.report import render

    doc = run_tune(config_file, sets, space_file, n_trials=trials, timeout=timeout, workers=workers,
                   storage=storage, study=study, seed=seed, quiet=quiet)
    if as_json:
        _emit_json(doc)
    else:
        click.echo(render(doc))


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM or SIGHUP ends a command like Ctrl-C: cleanly, exit 130


def main():
    signal.signal(signal.SIGTERM, _terminate)
    if hasattr(signal, "SIGHUP"):  # a closed terminal: stop as cleanly as on Ctrl-C, not die mid-write
        signal.signal(signal.SIGHUP, _terminate)
    cli(prog_name="bp")


if __name__ == "__main__":
    main()
