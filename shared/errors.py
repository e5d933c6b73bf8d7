"""The one error convention shared by both tools.

Every failure the user can cause or meet (bad input, registry errors, corrupt or hostile layers, missing images,
a full disk) is raised as a :class:`StrataError` whose message is one line naming the cause. The CLIs print it as
``TOOL: error: MESSAGE`` and exit with the kind's code; nothing else is caught, so a bug still shows a traceback.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path


class Kind(enum.Enum):
    """What went wrong, which decides the exit code (``runner`` maps runtime failures to Docker's 125)."""

    USAGE = 2  # malformed input: a reference, an option value
    NOT_FOUND = 3  # image, layer, container or manifest missing
    REGISTRY = 4  # the registry answered with an error, or could not be reached
    INTEGRITY = 5  # digest / diff_id mismatch, malformed document
    HOSTILE = 6  # a layer tried to escape or corrupt its directory
    UNSUPPORTED = 7  # a valid thing we do not handle (schema1, unknown media type)
    STATE = 8  # store or container state conflicts (name in use, container running)
    SYSTEM = 9  # the OS said no (no space, permission, kernel feature missing)


class StrataError(Exception):
    """An error with a one-line, user-facing message and a :class:`Kind`."""

    def __init__(self, message: str, kind: Kind = Kind.SYSTEM, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = exit_code  # when the status is not the kind's (runner: 126, 127 as Docker)

    @property
    def message(self) -> str:
        return str(self)


class Cancelled(StrataError):
    """Work stopped because it was asked to (Ctrl-C, or another part of the same job failed), not because
    anything was wrong with it: what it did so far may be kept (a download, to resume)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, Kind.SYSTEM)


def usage(message: str) -> StrataError:
    return StrataError(message, Kind.USAGE)


def not_found(message: str) -> StrataError:
    return StrataError(message, Kind.NOT_FOUND)


def integrity(message: str) -> StrataError:
    return StrataError(message, Kind.INTEGRITY)


def hostile(message: str) -> StrataError:
    return StrataError(message, Kind.HOSTILE)


def prog_name() -> str:
    """The tool's name as the user typed it: ``puller`` for the installed script and for ``python -m puller``
    alike (whose argv[0] is the package's ``__main__.py``)."""
    path = Path(sys.argv[0])
    return path.parent.name if path.name == "__main__.py" else path.name


def warn(message: str) -> None:
    """Something the user should know that is not a failure (what a user namespace could not make), on one
    line as errors are: ``TOOL: warning: MESSAGE``."""
    print(f"{prog_name()}: warning: {message}", file=sys.stderr)
