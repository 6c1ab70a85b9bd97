"""Configuration: every default in one commented place, validated once.

Precedence is defaults < config file < command-line flags, whatever their
order on the command line. A config file is a short YAML map of overrides;
``--set key.path=value`` addresses any key and parses its value as YAML
(``--set model.hidden=[64,32]``). Unknown keys, wrong types and invalid
values are ``ConfigError`` (exit 2) naming the key and the closest valid one.
"""

import copy
import dataclasses
import difflib
import functools
import json
import math
import os
from typing import NamedTuple

from .datasets import NAMES as DATASET_NAMES
from .errors import ConfigError
from . import datadir
from .budget import N_TRAIN, training_bytes
from .cpus import usable_cpus
from .fsutil import open_untrusted, shown, shown_path, truncate

# ---------------------------------------------------------------------------
# The rules, declared once: key -> check(value) returning an error or None.



def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo=None, hi=None, why=""):
    """An int in [lo, hi]; ``why`` says what the upper bound is (a user hitting it wonders)."""
    def check(v):
        if not _is_int(v):
            return f"must be an integer, got {shown(v)}"
        if lo is not None and v < lo:
            return f"must be >= {lo:,}, got {shown(v)}"
        if hi is not None and v > hi:
            return f"must be <= {hi:,}, got {shown(v)}{why and f' ({why})'}"
        return None
    check.type = int
    return check


def number(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if not _is_number(v):
            return f"must be a number, got {shown(v)}"
        try:
            finite = math.isfinite(v)
        except OverflowError:  # an int beyond float's range (1.8e308)
            finite = False
        if not finite:
            return f"must be finite, got {shown(v)}"
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}, got {shown(v)}"
        if hi is not None and (v >= hi if hi_open else v > hi):
            return f"must be {'<' if hi_open else '<='} {hi}, got {shown(v)}"
        return None
    check.type = float  # YAML's 1 for 1.0 reads as 1.0
    return check


def optional(check):
    """null, or whatever ``check`` accepts."""
    def check_optional(v):
        problem = None if v is None else check(v)
        return problem and problem.replace(", got", " (or null), got", 1)
    check_optional.type = check.type  # (None stays None: Recipe.of)
    return check_optional


def choice(*options):
    def check(v):
        if v not in options:
            near = difflib.get_close_matches(v, options, n=1) if isinstance(v, str) else []
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            return f"must be one of {', '.join(options)}, got {shown(v)}{hint}"
        return None
    check.options = options  # (the CLI's choice flags offer the same)
    check.type = str
    return check


def boolean(v):
    return None if isinstance(v, bool) else f"must be true or false, got {shown(v)}"


def string(v):
    return None if isinstance(v, str) and v else f"must be a non-empty string, got {shown(v)}"


boolean.type, string.type = bool, str


MAX_UNITS = 100_000  # per hidden layer; larger is a typo, not a model for 784 inputs
# Hidden layers: every layer costs a fixed few Python calls and prepared products
# per step and two arrays in each checkpoint, whatever its width, so a million
# one-unit layers fit in memory yet never finish a step. Backprop through a plain
# MLP stops training long before 100 layers (the gradient vanishes or explodes
# layer by layer); 100 is generous.
MAX_LAYERS = 100


def layer_sizes(v):
    if not isinstance(v, list) or not all(_is_int(n) for n in v):
        return f"must be a list of integers like [256, 128], got {shown(v)}"
    if len(v) > MAX_LAYERS:
        return f"has {len(v):,} hidden layers; use at most {MAX_LAYERS}"
    if any(n < 1 for n in v):
        return f"layer sizes must be >= 1, got {shown(v)}"
    if any(n > MAX_UNITS for n in v):
        biggest = max(v)
        need = 785 * 4 * 3 * float(min(biggest, 10**30)) / 2**30  # a float, however long the int
        return (f"a layer of {shown(biggest)} units needs over {need:,.1f} GiB for weights, gradients "
                f"and momentum; use at most {MAX_UNITS:,} units per layer")
    return None


layer_sizes.type = tuple


# train.augment: false, or a map of transforms -> a check of each one's value.
# The bounds are where the transform still makes sense and bpcli/augment.py still
# computes it; past them it breaks, not just distorts:
AUGMENT = {
    "shift": number(lo=0.0, hi=14.0),           # largest shift in pixels, each axis
    "rotate": number(lo=0.0, hi=180.0),         # largest rotation in degrees
    # largest relative change of size. The warp divides by the factor 1 + u, u in
    # [-scale, scale], computed in float32: from scale ~ 1 - 2**-25 on that factor
    # can round to exactly 0, and 0/0 source points crashed the bilinear read. At
    # 0.9 a digit may shrink to a tenth of its size (a dot), which is far enough.
    "scale": number(lo=0.0, hi=0.9),
    "shear": number(lo=0.0, hi=2.0),            # largest shear factor
    "elastic": number(lo=0.0, hi=100.0),        # elastic distortion strength alpha, pixels
    # smoothness of the elastic field, pixels. Below a tenth of a pixel the Gaussian
    # is the identity to float32 precision (exp(-50)), so smaller values change
    # nothing; below ~1e-162 sigma**2 underflows to 0, the Gaussian becomes 0/0 =
    # nan and training crashed (1e-300: IndexError in the bilinear read).
    "elastic_sigma": number(lo=0.1, hi=28.0),
}


def augment(v):
    if v is False or v is None:
        return None
    if not isinstance(v, dict):
        return f"must be false or a map of transforms like {{shift: 2, rotate: 10}}, got {shown(v)}"
    for key, value in v.items():
        if key not in AUGMENT:
            near = difflib.get_close_matches(str(key), list(AUGMENT), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; known: {', '.join(AUGMENT)}"
            return f"has an unknown transform {shown(key)}{hint}"
        problem = AUGMENT[key](value)
        if problem:
            return f"transform '{key}' {problem}"
    return None


# what code reads: None for no augmentation, else each transform's largest amount as a float
augment.type = lambda v: {name: float(amount) for name, amount in v.items()} if v else None


# Bounds beyond "what the type allows", each because something past it breaks:
MAX_EPOCHS = 1_000_000  # months to years of training; an int past 1e308 crashed the schedules
MAX_SEED = 2**128 - 1   # SeedSequence mixes a seed into 128 bits: larger seeds add no streams

class Key(NamedTuple):
    """One config key, declared once: validation (``rule``), the defaults, ``bp config
    --keys`` (the manual's key reference) and the CLI's help all come from here."""

    path: str       # the YAML key, the config field, the --set path and the checkpoint key
    default: object
    rule: object    # value -> None, or what is wrong with it
    accepts: str    # the rule in words
    help: str       # what the key does


# Every key bp knows. The defaults are the recipe configs/default.yaml (tests/test_config.py
# holds the two equal), so a bare `bp train` trains the main job.
KEYS = [
    Key("seed", 0, integer(lo=0, hi=MAX_SEED, why="a seed is at most 128 bits"), "integer 0 .. 2^128 - 1",
        "fixes init, validation split, shuffling, dropout and augmentation"),
    Key("data.dir", datadir.DEFAULT, string, "non-empty string",
        "the data cache; --data-dir and $BP_DATA_DIR decide first ([data.md](data.md))"),
    Key("data.dataset", "mnist", choice(*DATASET_NAMES), ", ".join(f"`{n}`" for n in DATASET_NAMES),
        "which dataset: IDX drop-ins, each verified ([data.md](data.md#other-datasets))"),
    Key("data.validation", 5000, integer(lo=0, hi=N_TRAIN - 1), "integer 0 .. 59,999, below `data.limit`",
        "images held out of the training set for validation; 0 trains on all (`best.npz` is then the last epoch)"),
    Key("data.limit", None, optional(integer(lo=1)), "null or integer >= 1", "use only the first N training images"),
    Key("model.hidden", [512, 256], layer_sizes, "list of at most 100 integers, each 1 .. 100,000",
        "hidden layer sizes; input 784 and output 10 are fixed"),
    Key("model.activation", "relu", choice("sigmoid", "tanh", "relu", "leaky_relu"),
        "`sigmoid`, `tanh`, `relu`, `leaky_relu`", "hidden units (leaky slope 0.01)"),
    Key("model.output", "softmax", choice("softmax", "sigmoid"), "`softmax`, `sigmoid`", "output units"),
    Key("model.loss", "cross_entropy", choice("cross_entropy", "mse"), "`cross_entropy`, `mse`",
        "`mse` is the quadratic cost C0 = Σ (a − y)²"),
    Key("model.init", "auto", choice("auto", "he", "xavier", "normal"), "`auto`, `he`, `xavier`, `normal`",
        "`auto`: he for relu, xavier otherwise; `normal`: N(0, 1)"),
    Key("model.dropout", 0.0, number(lo=0.0, hi=1.0, hi_open=True), "number in [0, 1)",
        "probability of dropping a hidden unit while training"),
    Key("train.engine", "fast", choice("fast", "reference"), "`fast`, `reference`",
        "which code trains: the fast engine, or network.py + optim.py, the code to read (same weights within "
        "float32 rounding)"),
    Key("train.epochs", 16, integer(lo=1, hi=MAX_EPOCHS, why="that many epochs would never finish"),
        "integer 1 .. 1,000,000", "passes over the training set"),
    # the step allocates (batch, width) arrays per layer up front: past the whole
    # training set they are never filled, only paid for
    Key("train.batch_size", 256, integer(lo=1, hi=N_TRAIN, why="MNIST has 60,000 training images; "
                                                               "a larger batch is never filled"),
        "integer 1 .. 60,000", "mini-batch size"),
    Key("train.optimizer", "sgd", choice("sgd", "adam"), "`sgd`, `adam`", "how the gradient moves the weights"),
    Key("train.lr", 0.3, number(lo=0.0, lo_open=True), "number > 0",
        "learning rate η: the size of each step against the gradient"),
    Key("train.momentum", 0.9, number(lo=0.0, hi=1.0, hi_open=True), "number in [0, 1)", "SGD only; 0 is plain SGD"),
    Key("train.nesterov", True, boolean, "true, false", "SGD only: Nesterov momentum"),
    Key("train.beta1", 0.9, number(lo=0.0, hi=1.0, hi_open=True), "number in [0, 1)", "Adam only"),
    Key("train.beta2", 0.999, number(lo=0.0, hi=1.0, hi_open=True), "number in [0, 1)", "Adam only"),
    Key("train.weight_decay", 1e-4, number(lo=0.0), "number >= 0", "L2 on the weights (not the biases)"),
    Key("train.schedule", "cosine", choice("constant", "step", "cosine"), "`constant`, `step`, `cosine`",
        "learning-rate schedule over `train.epochs`"),
    Key("train.step_size", 5, integer(lo=1, hi=MAX_EPOCHS), "integer 1 .. 1,000,000", "step schedule: epochs between decays"),
    Key("train.gamma", 0.1, number(lo=0.0, hi=1.0, lo_open=True), "number in (0, 1]",
        "step schedule: factor per decay"),
    Key("train.warmup_epochs", 1.0, number(lo=0.0), "number >= 0",
        "grow the learning rate linearly from 0 over these epochs"),
    Key("train.label_smoothing", 0.1, number(lo=0.0, hi=1.0, hi_open=True), "number in [0, 1)",
        "targets (1 − e) one-hot + e/10 instead of one-hot"),
    Key("train.max_norm", None, optional(number(lo=0.0, lo_open=True)), "null or number > 0",
        "cap each unit's incoming weight vector at this length"),
    Key("train.patience", None, optional(integer(lo=1)), "null or integer >= 1",
        "early stopping: epochs without a better validation accuracy"),
    Key("train.augment", {"shift": 1.5, "rotate": 8, "scale": 0.08}, augment, "false, or a map of transforms",
        "warp every training image afresh each epoch (see below)"),
]
BY_PATH = {key.path: key for key in KEYS}
RULES = {key.path: key.rule for key in KEYS}


# ---------------------------------------------------------------------------
# What code reads: a resolved config as typed, read-only values. Each section's fields
# are its keys in KEYS, each value converted by its key's rule (``rule.type``): code
# writes ``recipe.train.lr`` (a float, even where YAML said 1) and
# ``recipe.model.hidden`` (a tuple of ints), never ``values["train"]["lr"]``.

def _section(name):
    keys = [key for key in KEYS if key.path.startswith(name + ".")]
    cls = dataclasses.make_dataclass(
        name.title(), [(key.path.split(".")[1], key.rule.type if isinstance(key.rule.type, type) else object)
                       for key in keys], frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = f"The {name}.* keys of a resolved config, typed (config.KEYS declares them)."
    return cls


Data, Model, Train = _section("data"), _section("model"), _section("train")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A resolved config as code reads it: ``recipe.seed``, ``recipe.data.limit``,
    ``recipe.model.hidden``, ``recipe.train.lr``."""

    seed: int
    data: Data
    model: Model
    train: Train

    @classmethod
    def of(cls, flat):
        """From a Config's ``flat`` map of valid values ({'train.lr': 0.3, ...})."""
        typed = {path: None if value is None else BY_PATH[path].rule.type(value) for path, value in flat.items()}
        sections = {name: section(**{path.split(".")[1]: value for path, value in typed.items()
                                     if path.startswith(name + ".")})
                    for name, section in (("data", Data), ("model", Model), ("train", Train))}
        return cls(seed=typed["seed"], **sections)


def key_reference():
    """The manual's table of config keys (``bp config --keys``), from KEYS."""
    rows = ["| key | accepts | default | what it does |", "|---|---|---|---|"]
    for key in KEYS:
        default = "null" if key.default is None else json.dumps(key.default) if not isinstance(key.default, str) \
            else key.default
        rows.append(f"| `{key.path}` | {key.accepts} | `{default}` | {key.help} |")
    return "\n".join(rows)


def flatten(tree, prefix=""):
    """{'a': {'b': 1}} -> {'a.b': 1}; a map under a leaf key (augment) stays a value."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in RULES:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def unflatten(flat):
    tree = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


DEFAULTS = unflatten({key.path: key.default for key in KEYS})


# What other tools call bp's keys: a suggestion by meaning, where spelling finds nothing
# close ('learning_rate' is nearer 'weight_decay' than 'lr' letter by letter).
SYNONYMS = {
    "learning_rate": "train.lr", "eta": "train.lr", "alpha": "train.lr",
    "layers": "model.hidden", "hidden_layers": "model.hidden", "hidden_layer_sizes": "model.hidden",
    "units": "model.hidden", "sizes": "model.hidden", "width": "model.hidden",
    "batch": "train.batch_size", "batchsize": "train.batch_size", "minibatch": "train.batch_size",
    "mini_batch_size": "train.batch_size",
    "epoch": "train.epochs", "n_epochs": "train.epochs", "num_epochs": "train.epochs",
    "max_iter": "train.epochs", "iterations": "train.epochs",
    "l2": "train.weight_decay", "decay": "train.weight_decay", "wd": "train.weight_decay",
    "lambda": "train.weight_decay", "lmbda": "train.weight_decay",
    "nonlinearity": "model.activation", "act": "model.activation", "activation_function": "model.activation",
    "cost": "model.loss", "criterion": "model.loss", "objective": "model.loss",
    "solver": "train.optimizer", "optim": "train.optimizer",
    "scheduler": "train.schedule", "lr_schedule": "train.schedule", "lr_scheduler": "train.schedule",
    "warmup": "train.warmup_epochs", "smoothing": "train.label_smoothing",
    "augmentation": "train.augment", "augmentations": "train.augment", "aug": "train.augment",
    "early_stopping": "train.patience", "n_iter_no_change": "train.patience",
    "random_state": "seed", "random_seed": "seed",
    "val": "data.validation", "valid": "data.validation", "validation_size": "data.validation",
    "n_samples": "data.limit", "max_samples": "data.limit",
    "initializer": "model.init", "weight_init": "model.init", "keep_prob": "model.dropout",
    "beta_1": "train.beta1", "beta_2": "train.beta2",
}


def _unknown_key(path, where):
    leaf = path.rsplit(".", 1)[-1].lower().replace("-", "_")
    near = [SYNONYMS[leaf]] if leaf in SYNONYMS else []
    if not near and len(path) < 100:
        near = difflib.get_close_matches(path, list(RULES), n=1, cutoff=0.5)
    if not near:  # 'lr' alone should still find 'train.lr'
        near = [k for k in RULES if k.rsplit(".", 1)[-1] == path.rsplit(".", 1)[-1]][:1]
    hint = f"; did you mean '{near[0]}'?" if near else "; run 'bp config' to see every key"
    return ConfigError(f"unknown config key {shown(path)} ({where}){hint}")


class Config:
    """A resolved config: ``values`` (nested dict) and, per key, where it came from."""

    def __init__(self):
        self.flat = flatten(copy.deepcopy(DEFAULTS))
        self.source = {k: "default" for k in self.flat}

    def update(self, tree, where):
        """Apply a (possibly nested) map of overrides, checking every key and value."""
        if not isinstance(tree, dict):
            raise ConfigError(f"{where}: expected a map of settings like 'train: {{lr: 0.1}}', "
                              f"got {type(tree).__name__}")
        for path, value in flatten(tree).items():
            self.set(path, value, where)

    def set(self, path, value, where):
        if path not in RULES:
            # 'model: 3' would reach here as 'model' with a non-map value
            if any(k.startswith(path + ".") for k in RULES):
                raise ConfigError(f"config key '{path}' ({where}) must be a map, got {shown(value)}")
            raise _unknown_key(path, where)
        problem = RULES[path](value)
        if problem:
            raise ConfigError(f"config key '{path}' ({where}) {problem}")
        self.flat[path] = value
        self.source[path] = where

    @property
    def values(self):
        """The nested map a config file, a checkpoint and config.yaml hold."""
        return unflatten(self.flat)

    def data_dir(self, flag=None):
        """``(folder, source)``: where this config's data is, by ``datadir.choose`` (``flag`` is
        --data-dir; a data.dir from --set is the command line's, a config file's is not)."""
        folder, source = self.flat["data.dir"], self.source["data.dir"]
        return datadir.choose(flag, given=folder if source == "--set" else None, beside=(folder, source))

    @property
    def recipe(self):
        """The typed values code reads (``Recipe``)."""
        return Recipe.of(self.flat)

    def to_yaml(self, with_sources=False):
        """The resolved config as YAML; with_sources adds '# from …' comments."""
        import yaml

        lines, section = [], None
        for path, value in self.flat.items():
            parts = path.split(".")
            if len(parts) == 2 and parts[0] != section:
                section = parts[0]
                lines.append(f"{section}:")
            indent = "  " if len(parts) == 2 else ""
            text = yaml.safe_dump({parts[-1]: value}, default_flow_style=True, width=10**6).strip()[1:-1]
            comment = "" if not with_sources or self.source[path] == "default" else f"  # from {self.source[path]}"
            lines.append(f"{indent}{text}{comment}")
        return "\n".join(lines) + "\n"


MAX_CONFIG_BYTES = 64 * 1024  # bp's configs are a few hundred bytes; a --set value too
MAX_DEPTH = 32  # nesting of lists and maps; bp's deepest key (train.augment) is 3 deep


@functools.lru_cache(maxsize=None)
def _loader():
    """yaml.SafeLoader for untrusted text, built on first use (PyYAML is not imported
    by ``bp --help``). On top of safe_load:

    * '1e-3' is a number (YAML 1.1 wants '1.0e-3'; people write 1e-3);
    * aliases (``*name``) are refused: a 386-byte "billion laughs" document of
      nested aliases expands to billions of nodes, and bp's configs use none.
      Refusing them all is simpler, and safer, than bounding their expansion;
    * nesting deeper than MAX_DEPTH is refused before the composer's recursion
      gets anywhere near Python's limit (10 KB of '[' was a RecursionError);
    * an integer too long for Python's int() (4,300 digits) is a YAML error, not
      a ValueError.
    """
    import re

    import yaml
    from yaml.composer import ComposerError
    from yaml.constructor import ConstructorError

    class Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ComposerError(None, None, f"aliases (*{truncate(event.anchor, 40)}) are not "
                                    "allowed in a bp config; write the value out", event.start_mark)
            if self.depth >= MAX_DEPTH:
                raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep",
                                    self.peek_event().start_mark)
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node, deep=False):
            # PyYAML keeps the last of two equal keys, silently: a value the user wrote is lost
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                    if key_node.value in seen:
                        raise ConstructorError(None, None, f"the key {shown(key_node.value)} appears twice in "
                                               "one map; keep one", key_node.start_mark)
                    seen.add(key_node.value)
            return super().construct_mapping(node, deep)

        def construct_yaml_int(self, node):
            try:
                return super().construct_yaml_int(node)
            except ValueError:
                raise ConstructorError(None, None, f"integer of {len(node.value):,} digits is too long",
                                       node.start_mark) from None

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return Loader


def _yaml_load(text):
    import yaml

    return yaml.load(text, Loader=_loader())


def load_yaml_text(text):
    """YAML text from outside (a run's config.yaml, a space file) through the hardened
    loader (no aliases, bounded depth); ConfigError when it is not valid YAML."""
    import yaml

    try:
        return _yaml_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as err:
        raise ConfigError(f"not valid YAML: {_yaml_reason(err)}") from None


def parse_set(assignment):
    """'train.lr=0.05' -> ('train.lr', 0.05): the value is parsed as YAML."""
    import yaml

    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE like train.lr=0.05, got {shown(assignment)}")
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"--set {shown(key)}: the value is {len(raw):,} characters, over bp's limit "
                          f"of {MAX_CONFIG_BYTES:,}; put long settings in a config file")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {shown(key)}: value {shown(raw)} is not valid YAML "
                          f"({_yaml_reason(err)})") from None
    return key, value


def _yaml_reason(err):
    """What PyYAML found wrong, on one line and short (its text may quote the input)."""
    reason = getattr(err, "problem", None) or str(err).splitlines()[0]
    return shown_path(reason, limit=120)


RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")  # shipped in the package


def recipes():
    """The built-in recipes: name -> path of its YAML file, sorted by name."""
    try:
        names = sorted(n for n in os.listdir(RECIPES) if n.endswith(".yaml"))
    except OSError:
        return {}
    return {n[:-len(".yaml")]: os.path.join(RECIPES, n) for n in names}


def locate_config(name_or_path):
    """-c X: a file at X wins; else X (with or without .yaml) names a built-in recipe.
    -> (path to read, how messages name it)."""
    text = os.fspath(name_or_path)
    if os.path.lexists(text) or os.sep in text:
        return text, shown_path(text)
    name = text[:-len(".yaml")] if text.endswith(".yaml") else text
    found = recipes().get(name)
    return (found, f"recipe {name}") if found else (text, shown_path(text))


def describe_network(sizes, activation, output=None, loss=None):
    """How bp names a network everywhere: '784-256-128-10 relu', and with an output and a
    loss '784-256-128-10 relu, softmax + cross_entropy'."""
    text = "-".join(str(n) for n in sizes) + f" {activation}"
    return text if output is None else f"{text}, {output} + {loss}"


def recipe_table():
    """One row per built-in recipe: name, network, parameters, epochs, augmented, and
    the accuracy and time measured for it (its '# measured:' comment line)."""
    rows = []
    for name, path in recipes().items():
        recipe = resolve(path).recipe
        m, t = recipe.model, recipe.train
        sizes = [784, *m.hidden, 10]
        with open(path, encoding="utf-8") as f:
            measured = next((line.split(":", 1)[1].strip() for line in f if line.startswith("# measured:")), None)
        rows.append({"name": name, "network": describe_network(sizes, m.activation),
                     "parameters": sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])),
                     "epochs": t.epochs, "augmented": bool(t.augment), "measured": measured})
    return rows


def read_file(path):
    """Parse a YAML config file into a map (empty file = no overrides)."""
    tree = read_yaml(path, "config file",
                     f"; pass a YAML file or a built-in recipe ({', '.join(recipes())}; bp config --list)")
    return {} if tree is None else tree


def read_yaml(path, kind, hint=""):
    """The YAML document of an untrusted file (a config, bp tune's space file; None if empty),
    every problem a ConfigError naming the ``kind`` of file. Opened by ``fsutil.open_untrusted``
    (a FIFO or a device is refused, not waited on); at most MAX_CONFIG_BYTES are read."""
    import yaml

    f, _ = open_untrusted(path, kind, ConfigError, max_bytes=MAX_CONFIG_BYTES, hint=hint)
    shown_name = shown_path(path)
    with f:
        try:
            data = f.read(MAX_CONFIG_BYTES + 1)  # a file that grew after the size check
        except OSError as err:
            raise ConfigError(f"cannot read {kind} {shown_name}: {err.strerror or err}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{kind} {shown_name} is over bp's limit of {MAX_CONFIG_BYTES:,} bytes")
    try:
        return _yaml_load(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"cannot read {kind} {shown_name}: it is not UTF-8 text "
                          f"(byte {err.object[err.start]:#04x} at offset {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{kind} {shown_name} is not valid YAML{where}: {_yaml_reason(err)}") from None


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_size(cfg):
    """Refuse, before anything is allocated or created, a config whose training
    cannot fit in this machine's memory: the parameters grow with model.hidden,
    the step's buffers with train.batch_size times the layers' widths."""
    have = _memory_bytes()
    if not have:
        return
    part = training_bytes(cfg.recipe, usable_cpus())
    need = part["parameters"] + part["data"] + part["batch"] + part["evaluation"]
    if need <= 0.8 * have:
        return
    hidden = shown(cfg.flat["model.hidden"])
    machine = f"this machine has {have / 2**30:,.1f} GiB"
    if part["parameters"] >= part["batch"]:
        raise ConfigError(
            f"config key 'model.hidden' ({cfg.source['model.hidden']}) {hidden} makes "
            f"{part['n_params']:,} parameters, which need about {need / 2**30:,.1f} GiB to train; "
            f"{machine}: use smaller layers")
    raise ConfigError(
        f"config key 'train.batch_size' ({cfg.source['train.batch_size']}) {cfg.flat['train.batch_size']:,} "
        f"with model.hidden {hidden} needs about {need / 2**30:,.1f} GiB to train ({part['batch'] / 2**30:,.1f} "
        f"GiB of it for each batch's activations and gradients); {machine}: use a smaller batch or smaller layers")


def check_combinations(cfg):
    """Rules between keys, checked once every source is applied."""
    limit, validation = cfg.flat["data.limit"], cfg.flat["data.validation"]
    if limit is not None and validation >= limit:
        raise ConfigError(
            f"config key 'data.validation' ({cfg.source['data.validation']}) {validation:,} leaves no "
            f"training images out of data.limit {limit:,}; hold out fewer (at most {limit - 1:,})")


def resolve(config_file=None, sets=(), flags=None):
    """defaults < file < --set < named flags; data.dir by its own rule (``datadir``).
    ``flags`` maps key paths to values (None = not given)."""
    cfg = Config()
    if config_file:
        path, where = locate_config(config_file)
        cfg.update(read_file(path), where)
    for assignment in sets:
        key, value = parse_set(assignment)
        cfg.set(key, value, "--set")
    for path, value in (flags or {}).items():
        if value is not None:
            cfg.set(path, value, "flag --" + path.rsplit(".", 1)[-1].replace("_", "-"))
    # the data dir by its own rule (datadir; --data-dir is the command's to apply: data.settle_data_dir)
    cfg.set("data.dir", *cfg.data_dir())
    return check(cfg)


def variant(base, params, where):
    """``base`` with ``params`` ({key path: value}, from ``where``) set and checked as
    ``resolve`` checks a config: a bp tune trial's config, or a corner of its space."""
    cfg = copy.deepcopy(base)
    for path, value in params.items():
        cfg.set(path, value, where)
    return check(cfg)


def check(cfg):
    """``cfg``, once every source is applied: the rules between keys, and that its
    training fits in this machine's memory (resolve's last step; bp tune's trials too)."""
    check_combinations(cfg)
    check_model_size(cfg)
    return cfg


def from_values(values, where):
    """Rebuild a Config from a resolved tree (a run's config.yaml or a checkpoint)."""
    cfg = Config()
    cfg.update(values, where)
    return cfg
