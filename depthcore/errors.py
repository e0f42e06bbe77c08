"""The user-facing error family of depthcore, and how a command line prints one.

Every mistake a user can make (a config key, a data file, a path, a device) raises a
:class:`UserError` whose message is one line naming the file (and line or key), what was
expected and what was found. The command lines (``depthcore.train``, ``depthcore.evaluate``,
``depthcore.data.prepare``, and the sweep's) catch :class:`UserError`, print
``error: <message>`` and exit with :data:`EXIT_USAGE`; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys

EXIT_USAGE = 2


class UserError(ValueError):
    """A user mistake: the message is one line naming the file, line or key.

    A ``ValueError`` so that code catching the errors depthcore raised before this family
    existed keeps working.
    """


class ConfigError(UserError):
    """A configuration value is wrong: the message names the key."""


class DataError(UserError):
    """A data file (``.mat``, cache, split file, DIW CSV or image, checkpoint) is not what depthcore reads."""


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder that should exist does not."""


def one_line(err: BaseException) -> str:
    """The error's message on one line.

    A DataLoader worker re-raises its error with the worker's traceback appended; the line
    that matters is then the last one, ``module.Class: message``.
    """
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and "Original Traceback" in text:
        last = lines[-1]
        head, sep, rest = last.partition(": ")
        return rest if sep and head.replace(".", "").replace("_", "").isalnum() else last
    return " ".join(lines)


def report(err: BaseException) -> int:
    """Print ``error: <message>`` on stderr and return the exit code for a user mistake."""
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    return EXIT_USAGE
