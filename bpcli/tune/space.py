"""The space file: config key -> a range ``{low, high, log?, step?}`` or ``{choices: [...]}``,
checked like a config before any trial."""

import json
import math

from .. import config as config_mod
from ..errors import ConfigError
from ..fsutil import shown, shown_path, truncate


SPEC_FIELDS = {"low", "high", "log", "step", "choices"}
NOT_SEARCHABLE = {"data.dir": "it says where MNIST is, not how to train",
                  "data.dataset": "trials are compared on one dataset's validation split; set it in the base config"}


class Param:
    """One searched key: a range (``low``/``high``, ``log``, ``step``; int when the key's
    rule is) or a list of ``choices``. Choices that are lists or maps (``model.hidden``,
    ``train.augment``) go to Optuna as their JSON text, which it can store."""

    def __init__(self, key, low=None, high=None, log=False, step=None, choices=None, integer=False):
        self.key, self.low, self.high, self.log, self.step = key, low, high, log, step
        self.choices, self.integer = choices, integer

    def suggest(self, trial):
        if self.choices is not None:
            encoded = [_encode(c) for c in self.choices]
            return _decode(trial.suggest_categorical(self.key, encoded))
        if self.integer:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def distribution(self):
        """Optuna's distribution for this key (building it is where Optuna refuses a range)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None:
            return CategoricalDistribution([_encode(c) for c in self.choices])
        if self.integer:
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def extremes(self):
        """The values a rule between keys must hold for: every choice, or both ends."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def decode(self, value):
        """A value as Optuna stored it -> the config value."""
        return _decode(value) if self.choices is not None else value

    def as_dict(self):
        if self.choices is not None:
            return {"choices": self.choices}
        d = {"low": self.low, "high": self.high}
        if self.log:
            d["log"] = True
        if self.step is not None:
            d["step"] = self.step
        return d


def _encode(choice):
    return json.dumps(choice, sort_keys=True) if isinstance(choice, (list, dict)) else choice


def _decode(value):
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


def read_space(path):
    """Parse and validate a space file -> {key: Param}, in the file's order.

    Validated like a config (the same hardened YAML loader, the same rules):
    each key must be a config key, each low, high and choice a valid value of
    it; an unknown key names the closest valid one. Errors are ConfigError (exit 2).
    """
    name = shown_path(path)
    tree = config_mod.read_yaml(path, "space file", "; pass a YAML file like configs/spaces/fast.yaml")
    if tree is None or tree == {}:
        raise ConfigError(f"space file {name} names no keys to search; add one like "
                          "'train.lr: {low: 0.01, high: 0.5, log: true}'")
    if not isinstance(tree, dict):
        raise ConfigError(f"space file {name}: expected a map of config keys to ranges like "
                          f"'train.lr: {{low: 0.01, high: 0.5}}', got {type(tree).__name__}")
    return parse_space(tree, name)


def parse_space(tree, where, prefix=""):
    """A space map (dotted keys, or sections like ``train: {lr: {...}}``) -> {key: Param}."""
    space = {}
    for key, spec in tree.items():
        path = f"{prefix}{key}"
        if path not in config_mod.RULES:
            if isinstance(spec, dict) and any(k.startswith(path + ".") for k in config_mod.RULES) \
                    and not SPEC_FIELDS & set(spec):
                space.update(parse_space(spec, where, path + "."))
                continue
            err = config_mod._unknown_key(str(path), f"space file {where}")
            raise ConfigError(str(err).replace("unknown config key", "unknown key", 1)) from None
        if path in NOT_SEARCHABLE:
            raise ConfigError(f"space file {where}: '{path}' cannot be searched ({NOT_SEARCHABLE[path]})")
        space[path] = _param(path, spec, where)
    return space


def _param(key, spec, where):
    """One entry of the space file, checked against the key's own rule -> Param."""
    rule = config_mod.RULES[key]

    def bad(problem):
        return ConfigError(f"space file {where}: key '{key}' {problem}")

    if not isinstance(spec, dict):
        raise bad(f"needs a range like {{low: 0.01, high: 0.5}} or {{choices: [...]}}, got {shown(spec)}")
    unknown = [k for k in spec if k not in SPEC_FIELDS]
    if unknown:
        import difflib

        near = difflib.get_close_matches(str(unknown[0]), sorted(SPEC_FIELDS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; use {', '.join(sorted(SPEC_FIELDS))}"
        raise bad(f"has an unknown field {shown(unknown[0])}{hint}")
    if "choices" in spec:
        return Param(key, choices=_choices(spec, rule, bad))
    return _range(key, spec, rule, bad)


def _choices(spec, rule, bad):
    """``{choices: [...]}``: a non-empty list, each value one the key accepts, none twice."""
    if set(spec) != {"choices"}:
        raise bad("gives choices and a range; give one or the other")
    choices = spec["choices"]
    if not isinstance(choices, list) or not choices:
        raise bad(f"choices must be a non-empty list, got {shown(choices)}")
    seen = set()
    for choice in choices:
        problem = rule(choice)
        if problem:
            raise bad(f"choice {problem}")
        if _encode(choice) in seen:
            raise bad(f"lists the choice {shown(choice)} twice")
        seen.add(_encode(choice))
    return choices


def _range(key, spec, rule, bad):
    """``{low, high, log?, step?}``: both ends accepted by the key, low < high, then log or step."""
    if "low" not in spec or "high" not in spec:
        raise bad("needs both low and high (or a list of choices)")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for name, value in (("low", low), ("high", high)):
        if not config_mod._is_number(value):
            raise bad(f"{name} must be a number (a range searches numbers; use choices for "
                      f"other values), got {shown(value)}")
        problem = rule(value)
        if problem:
            raise bad(f"{name} {problem}")
    integer = rule.type is int  # the type the key's rule declares (config.KEYS)
    if not low < high:
        raise bad(f"low must be below high, got low {shown(low)} and high {shown(high)}")
    if not isinstance(log, bool):
        raise bad(f"log must be true or false, got {shown(log)}")
    if log and low <= 0:
        raise bad(f"a log range needs low > 0, got {shown(low)}")
    if step is not None:
        if log:
            raise bad("cannot have both log and step")
        _check_step(low, high, step, integer, bad)
    return Param(key, low, high, log, step, integer=integer)


def _check_step(low, high, step, integer, bad):
    """A step Optuna can search: positive, of the range's kind, and a whole number of steps."""
    ok = config_mod._is_int(step) if integer else config_mod._is_number(step)
    if not ok or step <= 0 or (isinstance(step, float) and not math.isfinite(step)):
        raise bad(f"step must be a positive {'integer' if integer else 'number'}, got {shown(step)}")
    steps = (high - low) / step
    if not math.isfinite(steps):  # a step so small the count of steps overflows a float
        raise bad(f"step {shown(step)} is too small for the range {shown(low)} to {shown(high)}; "
                  "use a larger step")
    if steps < 1 - 1e-9:  # Optuna would shrink the range to low alone, with a warning
        raise bad(f"step {shown(step)} is larger than the range {shown(low)} to {shown(high)}; use a step "
                  f"of at most {float(high - low):.6g}")
    if abs(steps - round(steps)) > 1e-9 * max(1.0, abs(steps)):
        raise bad(f"high - low ({high - low:g}) must be a whole number of steps of {step:g}")


def check_searchable(space, where):
    """Refuse, before any trial, a range Optuna cannot search (a step so small that its
    decimal arithmetic fails): otherwise each run of the study would add a failed trial."""
    for key, param in space.items():
        try:
            param.distribution()
        except (ValueError, ArithmeticError) as err:
            raise ConfigError(f"space file {where}: key '{key}' {shown(param.as_dict(), 120)} is a range "
                              f"Optuna cannot search ({type(err).__name__}: {truncate(str(err), 80)}); "
                              "use a larger step, or no step") from None


#: the keys the rules between keys read (config.check_combinations, check_model_size)
CROSS_KEYS = ("data.limit", "data.validation", "model.hidden", "model.dropout", "train.augment",
              "train.batch_size")
MAX_CORNERS = 4096


def check_corners(space, base, where):
    """The rules between keys, checked for every trial at once, before any trial starts:
    each combination of the extremes (every choice, both ends of a range) of the searched
    keys those rules read. A trial that broke one would fail mid-study, one per run."""
    import itertools

    keys = [k for k in CROSS_KEYS if k in space]
    for values in itertools.islice(itertools.product(*(space[k].extremes() for k in keys)), MAX_CORNERS):
        try:
            config_mod.variant(base, dict(zip(keys, values)), f"space file {where}")
        except ConfigError as err:
            trial = ", ".join(f"{k} {shown(v, 40)}" for k, v in zip(keys, values))
            raise ConfigError(f"space file {where}: a trial with {trial} would fail: {err}") from None


def space_doc(space):
    """The space as a canonical JSON text: what a study remembers to refuse another."""
    return json.dumps({k: p.as_dict() for k, p in space.items()}, sort_keys=True)
