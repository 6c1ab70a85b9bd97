"""bp's command line: thin commands that parse, call the library, and render.

Kept cheap to import (``bp --help`` must be instant): numpy, requests and
Pillow are imported inside the commands that need them. The library raises
``BpError``; ``main`` turns it into one ``Error: …`` line and its exit code.
"""

import json
import os
import sys

import click

from . import __version__
from .errors import BpError


class BpGroup(click.Group):
    """A click group that renders bp's own errors as ``Error: …`` with their exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BpError as err:
            exc = click.ClickException(str(err))
            exc.exit_code = err.exit_code
            raise exc from None


def _data_dir_option(f):
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Where MNIST is cached (default: $BP_DATA_DIR or ./data).",
    )(f)


def resolve_data_dir(data_dir):
    return data_dir or os.environ.get("BP_DATA_DIR") or "data"


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _emit_json(doc):
    click.echo(json.dumps(doc, indent=2))


@click.group(cls=BpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bp")
def cli():
    """bp: train a NumPy multilayer perceptron on MNIST by backpropagation."""


@cli.command()
@_data_dir_option
@click.option("--mirror", "mirrors", multiple=True, metavar="URL|DIR",
              help="Fetch from this base URL or local folder instead of the built-in list "
                   "(repeatable; also $BP_MNIST_MIRROR, comma-separated).")
@click.option("--force", is_flag=True, help="Fetch again even if the cache is valid.")
@click.option("--offline", is_flag=True, help="Never open a connection ($BP_OFFLINE=1); fail on missing files.")
def download(data_dir, mirrors, force, offline):
    """Download and verify MNIST into the data dir."""
    from . import download as dl

    paths = dl.ensure_mnist(
        resolve_data_dir(data_dir),
        mirrors=dl.resolve_mirrors(mirrors),
        offline=offline or _env_flag("BP_OFFLINE"),
        force=force,
    )
    for name, path in paths.items():
        click.echo(f"{name}: {path}")


def main():
    cli(prog_name="bp")


if __name__ == "__main__":
    main()
