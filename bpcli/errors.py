"""bp's own errors: the library raises these, the CLI turns them into one `Error:` line.

Exit codes follow docs/manual.md: 1 runtime error, 2 usage or config error,
3 an accuracy gate not met, 130 interrupted.
"""


class BpError(Exception):
    """A failure a user can act on. ``str(err)`` is the whole message, one line."""

    exit_code = 1


class ConfigError(BpError):
    """A bad config value, key or flag: a usage error."""

    exit_code = 2


class DataError(BpError):
    """MNIST files missing, corrupt or impossible to fetch."""


class CheckpointError(BpError):
    """A checkpoint that cannot be read or does not fit."""


class ImageError(BpError):
    """An image that cannot be read or holds no digit."""


class TrainingDiverged(BpError):
    """The loss turned nan/inf."""


class GateFailed(BpError):
    """--min-accuracy / --min-digit-accuracy not met: exit 3, for CI gates."""

    exit_code = 3
