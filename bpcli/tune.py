"""``bp tune``: hyperparameter search with Optuna, on one machine or on many.

A search is an Optuna *study*: trials ask the sampler (TPE) for values of the
config keys a space file names, each trial is an ordinary bp run (its own run
dir under the study's folder, trained by ``train.train``), the objective is
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

import contextlib
import copy
import functools
import json
import math
import os
import re
import signal
import socket
import sys
import time
import warnings

from . import config as config_mod
from . import record
from .cpus import set_blas_threads, usable_cpus
from .errors import BpError, ConfigError
from .fsutil import one_line, open_untrusted, shell_word, shown, shown_path, truncate
from .progress import percent

INSTALL = "pip install -e '.[tune]'"
STUDIES = "studies"        # <runs root>/studies/NAME: one folder per study
STORAGE_FILE = "study.db"
BEST_CONFIG = "best.yaml"
BEST_MODEL = "best"         # in the study folder: a link to the best trial's run dir
TOP = 5                    # rows of the table of best trials
POLL_SECONDS = 0.5         # a worker with nothing to start looks again this often
DEFAULT_HEARTBEAT = 10
MAX_SPACE_BYTES = config_mod.MAX_CONFIG_BYTES
SPEC_FIELDS = {"low", "high", "log", "step", "choices"}
NOT_SEARCHABLE = {"data.dir": "it says where MNIST is, not how to train",
                  "data.dataset": "trials are compared on one dataset's validation split; set it in the base config"}
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Interrupted(BpError):
    """Ctrl-C or SIGTERM during a search: running trials were saved as interrupted."""

    exit_code = 130


class Surplus(Exception):
    """This trial would make more than N; it is failed before it trains (never shown to a user)."""


def require_optuna():
    """Import optuna, or say how to install the extra (exit 1)."""
    try:
        import optuna
    except ImportError:
        raise BpError(f"bp tune needs Optuna, an optional extra: {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its "trial failed" warnings repeat ours, with tracebacks
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# ---------------------------------------------------------------------------
# The space: config key -> {low, high, log?, step?} or {choices: [...]}

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
    import yaml

    name = shown_path(path)
    f, _ = open_untrusted(path, "space file", ConfigError, max_bytes=MAX_SPACE_BYTES,
                          hint="; pass a YAML file like configs/spaces/fast.yaml")
    with f:
        try:
            data = f.read(MAX_SPACE_BYTES + 1)
        except OSError as err:
            raise ConfigError(f"cannot read space file {name}: {err.strerror or err}") from None
    if len(data) > MAX_SPACE_BYTES:
        raise ConfigError(f"space file {name} is over bp's limit of {MAX_SPACE_BYTES:,} bytes")
    try:
        tree = config_mod._yaml_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read space file {name}: it is not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"space file {name} is not valid YAML{where}: {config_mod._yaml_reason(err)}") from None
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
        return Param(key, choices=choices)
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
    # the key's own rule says whether it is an integer: it refuses 0.5 as "must be an integer"
    integer = "integer" in (rule(0.5) or "")
    if not low < high:
        raise bad(f"low must be below high, got low {shown(low)} and high {shown(high)}")
    if not isinstance(log, bool):
        raise bad(f"log must be true or false, got {shown(log)}")
    if log and low <= 0:
        raise bad(f"a log range needs low > 0, got {shown(low)}")
    if step is not None:
        if log:
            raise bad("cannot have both log and step")
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
    return Param(key, low, high, log, step, integer=integer)


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
        cfg = copy.deepcopy(base)
        for key, value in zip(keys, values):
            cfg.set(key, value, f"space file {where}")
        try:
            config_mod.check_combinations(cfg)
            config_mod.check_model_size(cfg)
        except ConfigError as err:
            trial = ", ".join(f"{k} {shown(v, 40)}" for k, v in zip(keys, values))
            raise ConfigError(f"space file {where}: a trial with {trial} would fail: {err}") from None


def space_doc(space):
    """The space as a canonical JSON text: what a study remembers to refuse another."""
    return json.dumps({k: p.as_dict() for k, p in space.items()}, sort_keys=True)


# ---------------------------------------------------------------------------
# Storage and study

def default_study_name(space_file):
    stem = os.path.splitext(os.path.basename(os.fspath(space_file)))[0]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:64]
    return name or "study"


def check_study_name(name):
    if not STUDY_NAME.fullmatch(name):  # fullmatch: "$" alone lets a trailing newline through
        raise ConfigError(f"--study {shown(name)} is not a usable name: use up to 64 letters, "
                          "digits, '.', '_' or '-', starting with a letter or digit")
    return name


def study_dir(name):
    from .rundir import runs_root

    return os.path.join(runs_root(), STUDIES, name)


def default_storage(folder):
    """The SQLite URL of the study folder's ``study.db``, escaped so that any path (with
    ``?``, ``#``, ``%``, spaces) names that file and no other."""
    from sqlalchemy.engine import URL

    path = os.path.abspath(os.path.join(folder, STORAGE_FILE))
    return URL.create("sqlite", database=path).render_as_string(hide_password=False)


def check_persistent(url):
    """Refuse a storage that forgets the study when bp exits (SQLite in memory): a study
    is continued by running the same command again."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return  # open_storage says what is wrong with it
    if parsed.drivername.split("+")[0] != "sqlite":
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:") or parsed.query.get("mode") == "memory":
        raise ConfigError(f"--storage {shown_url(url)} keeps the study in memory, lost when bp exits; "
                          "name a file (sqlite:///path/study.db) or leave --storage out")


SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# a secret given as a parameter: ?password=..., libpq's "host=h password=..." form, sslpassword=...
SECRET_PARAM = re.compile(r"(?i)((?:ssl)?pass(?:word|wd)?|pwd|secret|token|api[_-]?key)(\s*=\s*)"
                          r"('[^']*'|\"[^\"]*\"|[^&;\s]*)")


def _userinfo(url):
    """(text before the credentials, user, password or None, the rest) of a storage URL, split
    where a user would mean it: the password runs to the LAST "@" (it may hold an "@", a "/"
    or a ":" that the user did not escape), with or without a scheme."""
    scheme = SCHEME.match(url)
    head, rest = (url[:scheme.end()], url[scheme.end():]) if scheme else ("", url)
    if head.lower().startswith("sqlite") or "@" not in rest:
        return head, None, None, rest
    userinfo, host = rest.rsplit("@", 1)
    user, colon, password = userinfo.partition(":")
    return head, user, password if colon else None, host


def shown_url(url):
    """A storage URL fit to print: every password hidden (in the user part, however
    escaped, and as a parameter), on one line, cut."""
    head, user, password, rest = _userinfo(str(url))
    if user is not None:
        rest = f"{user}{':***' if password is not None else ''}@{rest}"
    return shown_path(SECRET_PARAM.sub(r"\1\2***", head + rest), 200)


def redact(text, url):
    """``text`` (a driver's or SQLAlchemy's message about ``url``) with the URL's secrets
    hidden, as given and as a parser may have split or unescaped them."""
    from urllib.parse import unquote

    _, _, password, _ = _userinfo(str(url))
    hidden = {m.group(3).strip("'\"") for m in SECRET_PARAM.finditer(str(url))}
    if password:
        # a parser that stops at the first "@" takes the rest of the password for the host
        hidden |= {password, unquote(password), *(part + "@" for part in password.split("@")[1:])}
    text = SECRET_PARAM.sub(r"\1\2***", str(text).replace(str(url), shown_url(url)))
    for secret in sorted((h for h in hidden if len(h) > 1), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


MAX_HEARTBEAT = 3600


def heartbeat_seconds():
    raw = os.environ.get("BP_TUNE_HEARTBEAT", "")
    if not raw:
        return DEFAULT_HEARTBEAT
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= MAX_HEARTBEAT:
        raise ConfigError(f"BP_TUNE_HEARTBEAT must be a whole number of seconds from 1 to {MAX_HEARTBEAT}, "
                          f"got {shown(raw)}")
    return int(raw)


def created_meanwhile(err):
    """Whether a database error is another worker having just created Optuna's tables: a
    duplicate key (SQLite), or PostgreSQL's "relation already exists" (SQLSTATE 42P07)."""
    import sqlalchemy.exc

    return isinstance(err, sqlalchemy.exc.IntegrityError) or getattr(getattr(err, "orig", None), "sqlstate", None) == "42P07"


def open_storage(url, heartbeat):
    """Optuna's RDBStorage for ``url`` with a heartbeat: a trial whose worker stops beating
    for three intervals (killed, or its machine gone) is failed and queued again."""
    optuna = require_optuna()
    import sqlalchemy.exc

    given = url
    check_persistent(url)
    if url.startswith("postgresql://"):  # the driver the extra installs, whatever SQLAlchemy's default
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    connect = {"timeout": 60} if url.startswith("sqlite") else {}  # SQLite: wait for a writer, not fail
    if url.startswith("postgresql"):
        connect = {"connect_timeout": 10}  # libpq's, in seconds
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": connect, "pool_pre_ping": True},
                heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as err:
            raise ConfigError(f"--storage {shown_url(given)} is not a database URL bp can use "
                              f"({_first_line(err, given)}); use e.g. postgresql://user@host/db or "
                              "sqlite:///file.db") from None
        except ImportError as err:
            raise BpError(f"--storage {shown_url(given)} needs a database driver that is missing "
                          f"({_first_line(err, given)}); {INSTALL} installs the PostgreSQL one") from None
        except RuntimeError as err:  # Optuna: tables of another Optuna version's schema
            raise BpError(f"the study storage {shown_url(given)} holds tables of another Optuna version "
                          f"({_first_line(err, given)}); upgrade them with: optuna storage upgrade "
                          "--storage URL, or start a new study elsewhere") from None
        except sqlalchemy.exc.SQLAlchemyError as err:
            if created_meanwhile(err):
                # machines starting together on an empty database both create Optuna's tables;
                # the loser's CREATE collides: the tables exist now, so open them again
                time.sleep(0.5 * (attempt + 1))
                continue
            raise BpError(f"cannot open the study storage {shown_url(given)}: "
                          f"{_first_line(getattr(err, 'orig', err), given)}; check that the database server "
                          "runs and the URL's host, port, user and database") from None
    raise BpError(f"cannot open the study storage {shown_url(given)}: its tables could not be created; try again")


def _first_line(err, url):
    """An error's first line, with ``url``'s secrets hidden, fit for a one-line message."""
    text = str(err).strip().splitlines()
    return one_line(redact(text[0] if text else type(err).__name__, url), 160)


def storage_errors():
    """The exceptions a lost or failing database raises through Optuna."""
    import sqlalchemy.exc

    optuna = require_optuna()
    return (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)


def storage_cause(err):
    """The database error behind ``err``, or None. Optuna's own clean-up can fail on the same
    lost connection with an error of its own (an UnboundLocalError in its _run_trial, 5.1),
    the database's error chained behind it."""
    errors, seen, found = storage_errors(), set(), None
    while err is not None and id(err) not in seen:
        if isinstance(err, errors):
            found = err  # the deepest says most: "connection refused", not "during the commit"
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return found


def lost_storage(err, url):
    """A database that failed mid-study (its server stopped, the network gone): one line."""
    return BpError(f"lost the study storage {shown_url(url)}: {_first_line(getattr(err, 'orig', None) or err, url)}; "
                   "when it is back, run the same command again: a trial that was running is failed "
                   "once its heartbeat is stale and run again")


def _identity(cfg):
    """What makes two runs of the same study the same search: the base config, less
    where the data is (each machine has its own data dir)."""
    flat = dict(cfg.flat)
    flat.pop("data.dir", None)
    return json.dumps(flat, sort_keys=True, default=str)


BP_ATTRS = ("bp_config", "bp_space")  # a study bp created carries both: its identity
CLAIM_SECONDS = 10  # how long a study just created by another bp (no attributes yet) is waited for


def open_study(storage, name, space, base, url):
    """Create the study, or join it if bp created it with the same space and base config.
    A study of that name that bp did not create (another user's, on a shared database) is
    refused and left as it is."""
    optuna = require_optuna()

    try:
        try:
            study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
            # bp_space last: a study that has it has both (see _bp_attrs)
            study.set_user_attr("bp_config", _identity(base))
            study.set_user_attr("bp_space", space_doc(space))
            attrs = study.user_attrs
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage)
            attrs = _bp_attrs(study)
    except storage_errors() as err:
        raise BpError(f"the study storage {shown_url(url)} failed: "
                      f"{_first_line(getattr(err, 'orig', None) or err, url)}") from None
    if attrs is None:
        raise ConfigError(f"study '{name}' in {shown_url(url)} was not created by bp tune (it has none of "
                          f"bp's attributes, and {len(study.get_trials(deepcopy=False))} trials); bp leaves it "
                          "untouched: choose another --study name")
    if attrs.get("bp_space") != space_doc(space):
        keys = ", ".join(json.loads(attrs["bp_space"]))
        raise ConfigError(f"study '{name}' in {shown_url(url)} was started with another search space "
                          f"({truncate(keys, 120)}); use the same space file to continue it, "
                          "or another --study name")
    if attrs.get("bp_config") != _identity(base):
        raise ConfigError(f"study '{name}' in {shown_url(url)} was started with another base config; "
                          "use the same -c/--set to continue it, or another --study name")
    return study


def _bp_attrs(study):
    """The user attributes of an existing study if bp created it, else None. Another bp that
    has just created it (machines starting together) sets them a moment later: a study with
    no trials and no attributes is waited for, briefly."""
    deadline = time.monotonic() + CLAIM_SECONDS
    while True:
        attrs = study.user_attrs
        if all(isinstance(attrs.get(k), str) for k in BP_ATTRS):
            try:
                json.loads(attrs["bp_space"])
                return attrs
            except ValueError:
                return None
        if attrs or study.get_trials(deepcopy=False) or time.monotonic() > deadline:
            return None
        time.sleep(POLL_SECONDS)


# ---------------------------------------------------------------------------
# Counting trials: the one rule that keeps K workers at exactly N

def counts(trials):
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
    from .train import Progress

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

    def __init__(self, config_file, sets, space_file, url, study, folder, n_trials, deadline,
                 seed, heartbeat, threads=None, quiet=False):
        self.config_file, self.sets, self.space_file = config_file, tuple(sets), space_file
        self.url, self.study, self.folder, self.n_trials = url, study, folder, n_trials
        self.deadline, self.seed, self.heartbeat = deadline, seed, heartbeat
        self.threads, self.quiet = threads, quiet


def _note(job, text):
    if not job.quiet:
        print(text, file=sys.stderr, flush=True)


def _trial_dir(folder, number):
    """A new run dir for trial ``number`` (a name left by an earlier study of the same name
    gets a suffix)."""
    from . import rundir

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
    from . import launch

    study = _load_study(job, worker)
    base = config_mod.resolve(job.config_file, job.sets)
    trials = TrialRunner(job, study, read_space(job.space_file), base, launch.load_data(base, progress=False), stop)
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

    def __init__(self, job, study, space, base, data, stop):
        self.job, self.study, self.space, self.base, self.data, self.stop = job, study, space, base, data, stop
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
        from . import launch

        if not admitted(self.study.get_trials(deepcopy=False), trial.number, self.job.n_trials):
            trial.set_user_attr("surplus", True)
            raise Surplus()
        _stop_if_asked(self.stop)  # before a run dir is made for a trial that would not train
        params = {key: p.suggest(trial) for key, p in self.space.items()}
        cfg = launch.variant(self.base, params, f"trial {trial.number}")
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
        from .errors import TrainingDiverged
        from .train import Interrupted as RunInterrupted

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
        shown = " ".join(f"{k}={_short(v)}" for k, v in params.items())
        _note(self.job, f"trial {trial.number}: {state} after {epochs} epoch{'s' * (epochs != 1)}, "
                        f"{seconds:.1f}s: {shown}")


def _loop(job, study, objective, stop):
    optuna = require_optuna()
    from .errors import TrainingDiverged

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
    from .train import STOP_SIGNALS, handling

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


def _short(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return shown(value, 40).replace(" ", "")


# ---------------------------------------------------------------------------
# Several workers on this machine

WATCH_PARENT_SECONDS = 1.0
STOP_GRACE_SECONDS = 30  # a stopping worker saves its trial; one that takes longer than this is killed


def _worker_process(job, worker, results, parent):
    """A spawned worker: BLAS threads pinned before numpy is imported, tied to its parent's
    life, signals turned into a clean stop, the outcome sent back as (kind, exit code, message)."""
    if job.threads:
        set_blas_threads(job.threads)
    from .train import STOP_SIGNALS

    def stop(signum, frame):  # until work() notes them for its safe points: no trial to save yet
        raise KeyboardInterrupt

    for s in STOP_SIGNALS:
        signal.signal(s, stop)
    _die_with_parent(parent)
    try:
        outcome = ("done", 0, work(job, worker))
    except KeyboardInterrupt:
        outcome = ("interrupted", 130, "")
    except BpError as err:
        outcome = ("interrupted", 130, "") if err.exit_code == 130 else ("error", err.exit_code, str(err))
    except Exception as err:  # a bug or a failure bp does not know: one line, not a traceback per worker
        outcome = ("error", 1, f"worker {worker} failed: {type(err).__name__}: "
                               f"{one_line(redact(str(err), job.url), 300)}")
    for s in STOP_SIGNALS:  # a Python no-op, not SIG_IGN: a pending signal would be an OSError
        signal.signal(s, lambda signum, frame: None)
    if os.getppid() == parent:  # nobody reads a dead parent's queue: its feeder would fail aloud
        results.put(outcome)


def _die_with_parent(parent):
    """Stop this worker (SIGTERM: a clean stop, its trial saved as interrupted) when the
    parent dies, even by kill -9: no worker goes on training as an orphan. Linux says so at
    once (PR_SET_PDEATHSIG); a thread watching the parent's pid covers the rest, and a
    parent that died before either was set up."""
    import threading

    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch():
        while os.getppid() == parent:
            time.sleep(WATCH_PARENT_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="bp-watch-parent", daemon=True).start()


def run_workers(job, k):
    """K spawned workers on this machine; returns when all have ended. A worker killed from
    outside is reported and the others go on (its trial comes back through the heartbeat)."""
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker_process, args=(job, i, results, os.getpid()), name=f"bp-tune-{i}")
             for i in range(k)]
    outcomes = []
    try:
        for p in procs:
            p.start()
        pending = {p.sentinel: p for p in procs}
        while pending:
            for sentinel in wait(list(pending)):
                p = pending.pop(sentinel)
                p.join()
                if p.exitcode and p.exitcode < 0:
                    _note(job, f"worker {procs.index(p)} (pid {p.pid}) was killed by signal {-p.exitcode}; "
                               "its trial is retried once its heartbeat is stale")
    except KeyboardInterrupt:
        _stop_workers(procs)
        raise
    finally:
        while len(outcomes) < k:
            try:
                outcomes.append(results.get(timeout=0.1))
            except Exception:  # queue.Empty: a worker that was killed sends nothing
                break
    errors = [o for o in outcomes if o[0] == "error"]
    if errors:
        raise (ConfigError if errors[0][1] == 2 else BpError)(errors[0][2])
    if any(o[0] == "interrupted" for o in outcomes):
        raise KeyboardInterrupt


def _stop_workers(procs):
    """SIGTERM to each live worker (each saves its trial as interrupted), then wait, bounded:
    one that has not stopped by then is killed (its trial is failed by the heartbeat)."""
    for p in procs:
        if p.pid is not None and p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for p in procs:
        if p.pid is None:
            continue
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


# ---------------------------------------------------------------------------
# The whole command

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
    from .download import ensure_mnist

    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise BpError(f"cannot create the study folder {folder}: {err.strerror or err}; set BP_RUNS_DIR") from None
    the_study = open_study(open_storage(url, heartbeat), name, space, base, url)
    ensure_mnist(base.recipe.data.dir, progress=False if quiet else None,  # once, not per worker
                 dataset=base.recipe.data.dataset)
    job = Job(config_file, sets, space_file, url, name, folder, n_trials,
              None if timeout is None else time.time() + timeout, seed, heartbeat,
              threads=max(1, cpus // workers) if workers > 1 else None, quiet=quiet)
    try:
        before = counts(the_study.get_trials(deepcopy=False))
        _note(job, f"study {name}: {before['finished']} of {n_trials} trials finished; storage "
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


def summarize(study, space, base, config_file, sets, folder, url, n_trials, seconds, timed_out=False):
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    c = counts(trials)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: (-t.value, t.number))

    def row(t):
        return {"number": t.number, "val_accuracy": t.value, "epochs": t.user_attrs.get("epochs"),
                "seconds": t.user_attrs.get("seconds"), "run_dir": t.user_attrs.get("run_dir"),
                "host": t.user_attrs.get("host"),
                "params": {k: space[k].decode(v) for k, v in t.params.items() if k in space}}

    doc = {"study": study.study_name, "storage": shown_url(url), "study_dir": folder,
           "trials": n_trials, "counts": c, "seconds": seconds, "top": [row(t) for t in complete[:TOP]],
           "best": None, "best_config": None, "best_model": None, "retrain": None}
    if c["finished"] < n_trials:
        doc["note"] = (f"stopped by --timeout with {c['finished']} of {n_trials} trials finished; run the "
                       "same command again to continue" if timed_out else
                       f"{c['finished']} of {n_trials} trials finished")
    if complete:
        best = row(complete[0])
        best["test_accuracy"] = _test_accuracy(best, base)
        doc["best"] = best
        path = os.path.join(folder, BEST_CONFIG)
        write_best_config(path, config_file, sets, best, study.study_name)
        doc["best_config"] = path
        doc["retrain"] = f"bp train -c {shell_word(path)}"
        if best["run_dir"] and os.path.isdir(best["run_dir"]):
            # the study's best model by name; runs/latest stays the user's own (trials never move it)
            from . import rundir

            doc["best_model"] = os.path.join(folder, BEST_MODEL)
            rundir.point(doc["best_model"], best["run_dir"])
    return doc


def _test_accuracy(best, base):
    """The best trial's test accuracy, once, from its best.npz: None when that run dir is on
    another machine."""
    ckpt = os.path.join(best["run_dir"] or "", "best.npz")
    if not best["run_dir"] or not os.path.isfile(ckpt):
        return None
    from .checkpoint import load_model
    from .evaluate import evaluate_checkpoint

    return evaluate_checkpoint(ckpt, load_model(ckpt), "test", data_dir=base.recipe.data.dir)["accuracy"]


def write_best_config(path, config_file, sets, best, study_name):
    """best.yaml: the base config file's keys, the --set values, and the best trial's values,
    as a config ``bp train -c`` accepts (checked by resolving it)."""
    import yaml

    from .fsutil import write_text_atomic

    flat = config_mod.flatten(config_mod.read_file(config_mod.locate_config(config_file)[0])) if config_file else {}
    for assignment in sets:
        key, value = config_mod.parse_set(assignment)
        flat[key] = value
    flat.update(best["params"])
    head = (f"# bp tune, study {study_name}: trial {best['number']}, validation accuracy "
            f"{percent(best['val_accuracy'])}\n# base: {config_file or 'the defaults'}"
            f"{''.join(f' --set {s}' for s in sets)}\n# retrain: bp train -c {path}\n")
    write_text_atomic(path, head + yaml.safe_dump(config_mod.unflatten(flat), sort_keys=False, default_flow_style=None))
    config_mod.resolve(path)


def render(doc):
    c = doc["counts"]
    lines = [f"study {doc['study']} ({doc['study_dir']}): {c['finished']} of {doc['trials']} trials finished "
             f"({c['complete']} complete, {c['pruned']} pruned), {c['failed']} failed, "
             f"{c['interrupted']} interrupted; {doc['seconds']:.1f}s"]
    if doc.get("note"):
        lines.append(doc["note"])
    if not doc["top"]:
        lines.append("no trial has completed yet")
        return "\n".join(lines)
    keys = list(doc["top"][0]["params"])
    header = ["trial", "val acc", "epochs", "time", *keys, "run dir"]
    rows = [header]
    for r in doc["top"]:
        rows.append([str(r["number"]), percent(r["val_accuracy"]), str(r["epochs"] if r["epochs"] is not None else "-"),
                     "-" if r["seconds"] is None else f"{r['seconds']:.1f}s",
                     *(_short(r["params"].get(k)) for k in keys), shown_path(r["run_dir"] or "-")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["", *("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows), ""]
    best = doc["best"]
    test = ("test " + percent(best["test_accuracy"]) if best["test_accuracy"] is not None
            else "test accuracy not measured here (its run dir is "
            + (f"on {one_line(best['host'], 60)})" if best["host"] else "not on this machine)"))
    lines.append(f"best trial {best['number']}: val {percent(best['val_accuracy'])}, {test}")
    if doc.get("best_model"):
        lines.append(f"best model {shown_path(doc['best_model'])}; evaluate it with: "
                     f"bp evaluate {shell_word(doc['best_model'])}")
    lines.append(f"best config {doc['best_config']}; retrain with: {doc['retrain']}")
    return "\n".join(lines)
