"""The study and its storage: names and folders, the storage URL (SQLite by default,
PostgreSQL shared by machines), secrets kept out of every message, the heartbeat, and
the check that a study is one bp made for this config and space."""

import json
import os
import re
import time
import warnings

from ..errors import BpError, ConfigError
from ..fsutil import one_line, shown, shown_path, truncate
from .space import space_doc


INSTALL = "pip install -e '.[tune]'"
STUDIES = "studies"        # <runs root>/studies/NAME: one folder per study
STORAGE_FILE = "study.db"
DEFAULT_HEARTBEAT = 10
POLL_SECONDS = 0.5         # a worker with nothing to start looks again this often
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def require_optuna():
    """Import optuna, or say how to install the extra (exit 1)."""
    try:
        import optuna
    except ImportError:
        raise BpError(f"bp tune needs Optuna, an optional extra: {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # its "trial failed" warnings repeat ours, with tracebacks
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


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
    from ..rundir import runs_root

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
