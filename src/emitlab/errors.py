"""The user-error family: problems in what the user gave us, reported as one line.

The CLI turns these (and only these) into ``emitlab: error: ...`` and exit status 2; any other
exception is a bug and keeps its traceback (exit status 1).
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every error caused by the user's input, settings or files."""


class DataError(UserError, ValueError):
    """A dataset problem, named by file, row and column."""


class SettingsError(UserError, ValueError):
    """A setting (flag or config-file value) that is not allowed."""


class ModelFormatError(UserError, ValueError):
    """An export folder or zip that cannot be loaded: names the file and what is wrong."""


class RunFolderError(UserError):
    """A run folder that cannot be used (exists, is not an emitlab run, ...)."""


class DiskSpaceError(UserError):
    """Too little free disk for what a command is about to write: says how much it needs."""
