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
