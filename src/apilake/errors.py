"""The exceptions apilake raises.

Every failure a user can meet is one of these types; the CLI turns them into a message and an
exit code in one place (`apilake.cli`). Tracebacks are for bugs, not for user mistakes.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """The exit codes of every `apilake` command (and the `exit_code` of a run's report)."""

    OK = 0
    FAILED = 1  # a unit failed or was not attempted, a gap, a table behind or a record not written
    USAGE = 2  # a bad job file or option, an unusable destination or address: nothing ran
    LOCKED = 3  # another run of the same job into the same destination is going
    INTERRUPTED = 130  # SIGINT or SIGTERM (128 + SIGINT, as shells report it)


class ApilakeError(Exception):
    """Base class of every error apilake raises on purpose."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class JobFileError(ApilakeError):
    """The job file (or a command-line option standing in for it) is unusable.

    The message names the file, the key path (`sources[0].endpoints[2].kind`) and what was expected.
    """

    exit_code = ExitCode.USAGE


class TemplateError(JobFileError):
    """A placeholder template cannot be rendered (unknown name, bad date format, unsafe key)."""


class TransferError(ApilakeError):
    """One unit could not be fetched or landed; the run goes on with the other units.

    `transient` says whether trying again may help (connection errors, timeouts, cut bodies,
    429, 5xx): the retry policy only retries transient errors.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after
        self.attempts = 1


TRANSIENT_STATUSES = frozenset({408, 425, 428, 429})  # and every 5xx: timeouts, too early, a vendor's 428 blacklisting, rate limits


def is_transient(status: int) -> bool:
    """Whether an HTTP status is worth another try, from a source's API and its token endpoint alike."""
    return status in TRANSIENT_STATUSES or status >= 500


class IntegrityError(TransferError):
    """A body was short, longer than announced, or not a complete gzip stream: nothing is stored."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class DestinationError(ApilakeError):
    """The destination cannot be reached or written (permissions, full disk, missing bucket).

    Raised out of a run (by `apilake run` and by each run of `apilake schedule` alike) it means
    nothing ran: a usage error. Met by one unit, it is that unit's failure (`executors.work`)."""

    exit_code = ExitCode.USAGE


class TableError(ApilakeError):
    """A table or one of its date partitions could not be built (a damaged raw object, a column
    whose type changed incompatibly, a catalog that refused): the partition stays as it was."""


class RunLockedError(ApilakeError):
    """Another run of the same job into the same destination is still going."""

    exit_code = ExitCode.LOCKED


class StateFileError(ApilakeError):
    """The scheduler cannot keep its state file, so it could not tell which runs it made."""

    exit_code = ExitCode.USAGE


class ExecutorError(ApilakeError):
    """The distributed executor cannot be used (scheduler unreachable): nothing was started."""

    exit_code = ExitCode.USAGE


class ListenError(ApilakeError):
    """An HTTP server (`apilake dashboard`, `apilake schedule --http`) cannot listen on its address."""

    exit_code = ExitCode.USAGE


class MissingExtraError(ApilakeError):
    """An optional feature needs a package that is not installed (e.g. `apilake[dask]`)."""

    exit_code = ExitCode.USAGE
