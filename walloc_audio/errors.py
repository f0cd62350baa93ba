"""Exception types for every failure a user can cause.

The CLI turns any :class:`WallocError` into one line on stderr and a non-zero
exit code; anything else is a bug and keeps its traceback.
"""


class WallocError(Exception):
    """Base class of errors caused by input, files or the environment, not by a bug."""

    exit_code = 1


class UsageError(WallocError):
    """The command line asks for something contradictory or ill-formed (exit 2, like a parse error)."""

    exit_code = 2


class BitstreamError(WallocError):
    """A ``.wlc`` stream is malformed, truncated, corrupt or exceeds a size limit."""

    exit_code = 3


class AudioError(WallocError):
    """Audio input cannot be read or is unusable (not audio, empty, NaN/Inf, ...)."""

    exit_code = 4


class ModelError(WallocError):
    """A model is unknown, not installed, or its weights fail their checksum."""

    exit_code = 5


class OutputError(WallocError):
    """An output cannot be written (exists, missing folder, read-only, disk full)."""

    exit_code = 6
