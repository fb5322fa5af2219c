"""The project's exceptions.

Every error a user can cause derives from :class:`VivitHpoError`; its message is one line that
names the bad value and says how to fix it. The CLI maps these to a non-zero exit in one place
(``vivit_hpo.cli``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "ArtifactPathError",
    "ConfigError",
    "DataError",
    "DataUnavailableError",
    "NonFiniteLossError",
    "OutputPathError",
    "SpecError",
    "StorageError",
    "StudyError",
    "StudyNotFoundError",
    "VivitHpoError",
]


class VivitHpoError(Exception):
    """Base class of every error that the user can fix; ``str(err)`` is one line."""


class DataError(VivitHpoError):
    """A session file breaks the data contract (``../shared/data-contract.md``)."""


class DataUnavailableError(DataError):
    """A session file that the study was created on is missing or unreadable on this node (a
    mount gone, a file removed): the node's fault, not the data's or the config's."""


class ConfigError(VivitHpoError):
    """A model or training config (YAML or ``--set``) is invalid."""


class SpecError(VivitHpoError):
    """A study spec is invalid, or its search space has no valid configuration."""


class ArtifactPathError(VivitHpoError):
    """A study name that is not a plain folder name, or an artifact folder (a study's, a trial's,
    its data) that would lie outside the artifacts root."""


class OutputPathError(VivitHpoError):
    """An output path that would destroy something: one of the command's own inputs, a folder
    where a file goes, or an existing file that the command replaces only with ``--force``."""


class StorageError(VivitHpoError):
    """The study storage URL is invalid or the database cannot be reached."""


class StudyError(VivitHpoError):
    """A study that does not exist (or already exists), or has no result to show yet."""


class StudyNotFoundError(StudyError):
    """No study of that name in the storage (what ``vivit-hpo run`` creates from ``--spec``)."""


class NonFiniteLossError(VivitHpoError):
    """Training produced a NaN or Inf loss or gradient; the run stops instead of training on."""
