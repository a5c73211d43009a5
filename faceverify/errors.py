"""The one base of the errors a user can cause and fix: bad input files, data that is missing or
damaged, a configuration or usage mistake, an output another run holds.

Every such error derives from :class:`FaceverifyError` *and* from the built-in type it has always
been (``ValueError``, ``OSError``, ``FileNotFoundError``, ...), so ``except ValueError`` in a
user's code keeps working; the command line prints a ``FaceverifyError`` as one line with exit
status 2.
"""

from __future__ import annotations


class FaceverifyError(Exception):
    """Something the user can fix; the message names the file, option or value and what to do."""


class InvalidInputError(FaceverifyError, ValueError):
    """A value, option or file content that cannot be used as given (the message says what would)."""


class MissingInputError(FaceverifyError, FileNotFoundError):
    """A file or folder the user named (or a command needs) that does not exist."""


class MissingEntryError(FaceverifyError, KeyError):
    """Something a protocol asks for that an input lacks (e.g. an image with no embedding)."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0]) if self.args else ""


class OutputExistsError(FaceverifyError, FileExistsError):
    """An output that already exists and would be replaced (the message names the way to allow it)."""


class NotAFolderError(FaceverifyError, NotADirectoryError):
    """A path that must be a folder (or lie in one) is a file."""


class IsAFolderError(FaceverifyError, IsADirectoryError):
    """A path that must be a file is a folder."""


class NotWritableError(FaceverifyError, PermissionError):
    """An output folder the user cannot write to."""
