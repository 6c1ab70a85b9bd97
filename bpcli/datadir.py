"""Where the data is: one rule, for every command.

    1. ``--data-dir DIR``
    2. a ``data.dir`` set on the command line (``--set data.dir=DIR``)   (bp train, config, tune)
    3. ``$BP_DATA_DIR``
    4. what the command has beside: a config file's ``data.dir`` (bp train, config,
       tune), or the dir a model's run recorded, when it already holds the verified
       files (evaluate, explain, plot, export, serve: ``data.choose_data_dir``)
    5. ``./data``

Where the data is cached belongs to the machine, not the recipe, so the
environment beats a file's ``data.dir`` (a run's recorded config.yaml included),
and what is typed on this command line beats the environment. A recorded dir
comes from a checkpoint or a run's config, untrusted: it is only ever read from,
never created or fetched into. No numpy here: ``bp config`` and ``bp --help``
stay cheap.
"""

import os

ENV = "BP_DATA_DIR"
DEFAULT = "data"


def choose(flag=None, given=None, beside=None):
    """``(folder, source)`` by the rule above. ``beside``: step 4, a ``(folder, source)``
    pair or a function giving one (or None), called only when steps 1-3 say nothing."""
    if flag:
        return flag, "flag --data-dir"
    if given:
        return given, "--set"
    if os.environ.get(ENV):
        return os.environ[ENV], f"${ENV}"
    found = beside() if callable(beside) else beside
    if found and found[0]:
        return found
    return DEFAULT, "default"
