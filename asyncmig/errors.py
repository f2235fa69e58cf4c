"""The exceptions asyncmig raises, each mapped to an exit code a script can act on.

    AsyncmigError                       root; ``exit_code`` 1
    ├── UsageError                      bad arguments or configuration (2)
    │   └── ConnectionStringError       malformed connection string (2)
    ├── ConnectionFailed                endpoint unreachable (3)
    │   └── AuthenticationFailed        the account rejected the key or token (3)
    │       └── ControlPlaneRequired    an Entra ID token cannot create containers or change throughput (3)
    ├── ResourceMissing                 database or container does not exist (4)
    ├── PlanMismatch                    an existing container differs from the plan (4)
    ├── StateError                      checkpoint, state or lock file problems (5)
    │   ├── CorruptState                unreadable or tampered file (5)
    │   ├── ForeignState                belongs to a different run identity (5)
    │   └── LockHeld                    another run holds the lock (5)
    ├── BackupCorrupt                   a backup file does not match its manifest (6)
    ├── DeadLettered                    documents were rejected; see the dead-letter file (7)
    ├── ValidationFailed                target differs from source (8)
    ├── SourceChanged                   the source changed while it was being read whole (9)
    ├── StorageError                    a local file could not be written: disk full, read-only (74)
    ├── TransientExhausted              faults persisted; checkpoint saved, re-run to resume (75)
    ├── LeaseLost                       another worker took over a range's lease (75)
    └── Interrupted                     Ctrl-C / SIGTERM; checkpoint saved (130)

Messages name the problem and what to do about it, and never contain secrets: build them with
``asyncmig.redaction.redact`` when they include text that came from outside.
"""

from __future__ import annotations

from typing import NoReturn


class AsyncmigError(Exception):
    """Root of every error asyncmig raises on purpose."""

    exit_code = 1


class UsageError(AsyncmigError):
    exit_code = 2


class ConnectionStringError(UsageError):
    pass


class ConnectionFailed(AsyncmigError):
    exit_code = 3


class AuthenticationFailed(ConnectionFailed):
    pass


class ControlPlaneRequired(AuthenticationFailed):
    """Creating or changing databases, containers or throughput needs the account key or the
    control plane; a Microsoft Entra ID data-plane role cannot do it."""


class ResourceMissing(AsyncmigError):
    exit_code = 4


class PlanMismatch(AsyncmigError):
    exit_code = 4


class StateError(AsyncmigError):
    exit_code = 5


class CorruptState(StateError):
    pass


class ForeignState(StateError):
    pass


class LockHeld(StateError):
    pass


class BackupCorrupt(AsyncmigError):
    exit_code = 6


class DeadLettered(AsyncmigError):
    exit_code = 7


class ValidationFailed(AsyncmigError):
    exit_code = 8


class SourceChanged(AsyncmigError):
    """The source was written to while an operation that needs it at rest (a backup) read it."""

    exit_code = 9


class StorageError(AsyncmigError):
    exit_code = 74


class TransientExhausted(AsyncmigError):
    exit_code = 75


class LeaseLost(AsyncmigError):
    """Another worker owns a range's lease now: this worker was fenced and stops copying it."""

    exit_code = 75


class Interrupted(AsyncmigError):
    exit_code = 130


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The error to report from a task group: the first asyncmig error, else the first error.

    Sibling tasks cancelled because one failed add nothing a user needs; the asyncmig error
    carries the actionable message and the exit code.
    """
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    return next((exc for exc in flat if isinstance(exc, AsyncmigError)), flat[0])


def raise_first(group: BaseExceptionGroup) -> NoReturn:
    """Raise :func:`first_error` of ``group`` with its own cause kept (``-v`` prints that chain); the
    group and the cancelled siblings are left out."""
    error = first_error(group)
    raise error from error.__cause__
