"""Configuration: every default in one commented place, validated once.

Precedence is defaults < config file < command-line flags, whatever their
order on the command line. A config file is a short YAML map of overrides;
``--set key.path=value`` addresses any key and parses its value as YAML
(``--set model.hidden=[64,32]``). Unknown keys, wrong types and invalid
values are ``ConfigError`` (exit 2) naming the key and the closest valid one.
"""

import copy
import difflib
import math
import os

from .errors import ConfigError

# Every key bp knows, with its default. The YAML key, the config field, the
# flag and the checkpoint key are spelled the same.
DEFAULTS = {
    "seed": 0,                      # one seed fixes init, split, shuffling and dropout
    "data": {
        "dir": "data",              # MNIST cache; $BP_DATA_DIR or --data-dir override it
        "validation": 5000,         # held out of the 60k training images; 0 trains on all
        "limit": None,              # use only the first N training images (quick runs)
    },
    "model": {
        "hidden": [256, 128],       # hidden layer sizes; input 784 and output 10 are fixed
        "activation": "relu",       # sigmoid | tanh | relu | leaky_relu
        "output": "softmax",        # softmax | sigmoid
        "loss": "cross_entropy",    # cross_entropy | mse (the quadratic cost (a - y)^2)
        "init": "auto",             # auto (he for relu, xavier otherwise) | he | xavier | normal
        "dropout": 0.0,             # probability of dropping a hidden unit while training
    },
    "train": {
        "epochs": 15,
        "batch_size": 128,
        "optimizer": "sgd",         # sgd | adam
        "lr": 0.1,                  # learning rate: the size of each step against the gradient
        "momentum": 0.9,            # sgd only; 0 is plain SGD
        "nesterov": True,           # sgd only
        "beta1": 0.9,               # adam only
        "beta2": 0.999,             # adam only
        "weight_decay": 0.0,        # L2 penalty on the weights
        "schedule": "cosine",       # constant | step | cosine
        "step_size": 5,             # step schedule: epochs between decays
        "gamma": 0.1,               # step schedule: factor per decay
        "warmup_epochs": 0.0,       # grow the learning rate linearly from 0 over these epochs
        "label_smoothing": 0.0,     # targets (1 - e) one-hot + e / 10 instead of one-hot
        "max_norm": None,           # cap each unit's incoming weight vector at this length
        "patience": None,           # stop after this many epochs without a better validation accuracy
        "augment": False,           # false, or a map of transforms: shift, rotate, scale, shear,
                                    # elastic, elastic_sigma (see bpcli/augment.py)
    },
}


# ---------------------------------------------------------------------------
# The rules, declared once: key -> check(value) returning an error or None.

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(lo=None, hi=None):
    def check(v):
        if not _is_int(v):
            return f"must be an integer, got {v!r}"
        if lo is not None and v < lo:
            return f"must be >= {lo}, got {v}"
        if hi is not None and v > hi:
            return f"must be <= {hi}, got {v}"
        return None
    return check


def number(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if not _is_number(v):
            return f"must be a number, got {v!r}"
        if not math.isfinite(v):
            return f"must be finite, got {v}"
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}, got {v}"
        if hi is not None and (v >= hi if hi_open else v > hi):
            return f"must be {'<' if hi_open else '<='} {hi}, got {v}"
        return None
    return check


def optional(check):
    """null, or whatever ``check`` accepts."""
    def check_optional(v):
        problem = None if v is None else check(v)
        return problem and problem.replace(", got", " (or null), got", 1)
    return check_optional


def choice(*options):
    def check(v):
        if v not in options:
            near = difflib.get_close_matches(str(v), options, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            return f"must be one of {', '.join(options)}, got {v!r}{hint}"
        return None
    return check


def boolean(v):
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


def string(v):
    return None if isinstance(v, str) and v else f"must be a non-empty string, got {v!r}"


MAX_UNITS = 100_000  # per hidden layer; larger is a typo, not a model for 784 inputs


def layer_sizes(v):
    if not isinstance(v, list) or not all(_is_int(n) for n in v):
        return f"must be a list of integers like [256, 128], got {v!r}"
    if any(n < 1 for n in v):
        return f"layer sizes must be >= 1, got {v}"
    if any(n > MAX_UNITS for n in v):
        biggest = max(v)
        need = (784 * biggest + biggest) * 4 * 3 / 2**30
        return (f"a layer of {biggest:,} units needs over {need:,.1f} GiB for weights, gradients "
                f"and momentum; use at most {MAX_UNITS:,} units per layer")
    return None


# train.augment: false, or a map of transforms -> a check of each one's value
AUGMENT = {
    "shift": number(lo=0.0, hi=14.0),           # largest shift in pixels, each axis
    "rotate": number(lo=0.0, hi=180.0),         # largest rotation in degrees
    "scale": number(lo=0.0, hi=1.0, hi_open=True),  # largest relative change of size
    "shear": number(lo=0.0, hi=2.0),            # largest shear factor
    "elastic": number(lo=0.0, hi=100.0),        # elastic distortion strength alpha, pixels
    "elastic_sigma": number(lo=0.0, lo_open=True, hi=28.0),  # smoothness of the elastic field
}


def augment(v):
    if v is False or v is None:
        return None
    if not isinstance(v, dict):
        return f"must be false or a map of transforms like {{shift: 2, rotate: 10}}, got {v!r}"
    for key, value in v.items():
        if key not in AUGMENT:
            near = difflib.get_close_matches(str(key), list(AUGMENT), n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; known: {', '.join(AUGMENT)}"
            return f"has an unknown transform '{_shown(key)}'{hint}"
        problem = AUGMENT[key](value)
        if problem:
            return f"transform '{key}' {problem}"
    return None


RULES = {
    "seed": integer(lo=0),
    "data.dir": string,
    "data.validation": integer(lo=0, hi=59_999),
    "data.limit": optional(integer(lo=1)),
    "model.hidden": layer_sizes,
    "model.activation": choice("sigmoid", "tanh", "relu", "leaky_relu"),
    "model.output": choice("softmax", "sigmoid"),
    "model.loss": choice("cross_entropy", "mse"),
    "model.init": choice("auto", "he", "xavier", "normal"),
    "model.dropout": number(lo=0.0, hi=1.0, hi_open=True),
    "train.epochs": integer(lo=1),
    "train.batch_size": integer(lo=1),
    "train.optimizer": choice("sgd", "adam"),
    "train.lr": number(lo=0.0, lo_open=True),
    "train.momentum": number(lo=0.0, hi=1.0, hi_open=True),
    "train.nesterov": boolean,
    "train.beta1": number(lo=0.0, hi=1.0, hi_open=True),
    "train.beta2": number(lo=0.0, hi=1.0, hi_open=True),
    "train.weight_decay": number(lo=0.0),
    "train.schedule": choice("constant", "step", "cosine"),
    "train.step_size": integer(lo=1),
    "train.gamma": number(lo=0.0, hi=1.0, lo_open=True),
    "train.warmup_epochs": number(lo=0.0),
    "train.label_smoothing": number(lo=0.0, hi=1.0, hi_open=True),
    "train.max_norm": optional(number(lo=0.0, lo_open=True)),
    "train.patience": optional(integer(lo=1)),
    "train.augment": augment,
}


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


def _shown(key):
    """A user's key as it can be printed on one line (control characters escaped)."""
    return str(key).encode("unicode_escape").decode("ascii")


def _unknown_key(path, where):
    near = difflib.get_close_matches(path, list(RULES), n=1, cutoff=0.5)
    if not near:  # 'lr' alone should still find 'train.lr'
        near = [k for k in RULES if k.rsplit(".", 1)[-1] == path.rsplit(".", 1)[-1]][:1]
    hint = f"; did you mean '{near[0]}'?" if near else "; run 'bp config' to see every key"
    return ConfigError(f"unknown config key '{_shown(path)}' ({where}){hint}")


class Config:
    """A resolved config: ``values`` (nested dict) and, per key, where it came from."""

    def __init__(self):
        self.flat = flatten(copy.deepcopy(DEFAULTS))
        self.source = {k: "default" for k in self.flat}
        data_dir = os.environ.get("BP_DATA_DIR")
        if data_dir:
            self.flat["data.dir"] = data_dir
            self.source["data.dir"] = "$BP_DATA_DIR"

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
                raise ConfigError(f"config key '{_shown(path)}' ({where}) must be a map, got {value!r}")
            raise _unknown_key(path, where)
        problem = RULES[path](value)
        if problem:
            raise ConfigError(f"config key '{path}' ({where}) {problem}")
        self.flat[path] = value
        self.source[path] = where

    @property
    def values(self):
        return unflatten(self.flat)

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


def _yaml_load(text):
    """yaml.safe_load, but '1e-3' is a number (YAML 1.1 wants '1.0e-3'; people write 1e-3)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return yaml.load(text, Loader=Loader)


def parse_set(assignment):
    """'train.lr=0.05' -> ('train.lr', 0.05): the value is parsed as YAML."""
    import yaml

    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE like train.lr=0.05, got {assignment!r}")
    try:
        value = _yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({_yaml_reason(err)})") from None
    return key, value


def _yaml_reason(err):
    return str(err).splitlines()[0]


def read_file(path):
    """Parse a YAML config file into a map (empty file = no overrides)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            tree = _yaml_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; see configs/ for examples") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; pass a .yaml file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: "
                          f"{getattr(err, 'problem', None) or _yaml_reason(err)}") from None
    return {} if tree is None else tree


BYTES_PER_PARAM = 4 * 5  # float32 weights, gradient, momentum/Adam moments and scratch


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_size(cfg):
    """Refuse, before anything is allocated, a network that cannot fit in this machine's memory."""
    sizes = [784, *cfg.flat["model.hidden"], 10]
    n_params = sum(m * n + n for m, n in zip(sizes[:-1], sizes[1:]))
    need = n_params * BYTES_PER_PARAM
    have = _memory_bytes()
    if have and need > 0.8 * have:
        raise ConfigError(
            f"config key 'model.hidden' ({cfg.source['model.hidden']}) {cfg.flat['model.hidden']} makes "
            f"{n_params:,} parameters, which need about {need / 2**30:,.1f} GiB to train; this machine has "
            f"{have / 2**30:,.1f} GiB: use smaller layers")


def resolve(config_file=None, sets=(), flags=None):
    """defaults < file < --set < named flags. ``flags`` maps key paths to values (None = not given)."""
    cfg = Config()
    if config_file:
        cfg.update(read_file(config_file), os.fspath(config_file))
    for assignment in sets:
        key, value = parse_set(assignment)
        cfg.set(key, value, "--set")
    for path, value in (flags or {}).items():
        if value is not None:
            cfg.set(path, value, "flag --" + path.rsplit(".", 1)[-1].replace("_", "-"))
    check_model_size(cfg)
    return cfg


def from_values(values, where):
    """Rebuild a Config from a resolved tree (a run's config.yaml or a checkpoint)."""
    cfg = Config()
    cfg.update(values, where)
    return cfg
