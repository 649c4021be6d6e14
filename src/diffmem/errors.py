"""User-facing errors.

Every problem caused by the user's input (bad data, bad option, unknown preset)
raises :class:`DiffmemError`.  The CLI turns it into a one-line message on
stderr and exit status 2, without a traceback.
"""


class DiffmemError(ValueError):
    """A problem with the user's input; the message names it."""
