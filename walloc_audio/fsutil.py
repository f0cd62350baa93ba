"""All-or-nothing output files that never clobber an input.

A codec CLI that dies half-way (disk full, Ctrl-C, a crash in the model) must
not leave a truncated ``song.wav`` that looks finished, nor destroy the file
that was there before. The classic recipe, used here, is:

1. check everything that can be checked *before* the expensive work starts
   (output exists, folder missing or read-only, output == an input);
2. write into a temporary file in the *same folder* as the output, so that
   both live on the same file system and the final step is atomic. On Linux it
   is an *unnamed* file (``O_TMPFILE``): it has no name until it is finished, so
   even ``kill -9`` or a power cut leaves nothing behind -- writers open it as
   ``/proc/self/fd/N``. Elsewhere (or on file systems without ``O_TMPFILE``) it is
   a hidden ``.part`` file that the error path deletes;
3. on success ``fsync`` the data, then give it the output's name (``linkat``
   for the unnamed file; ``os.replace`` of a temporary name onto the output:
   readers see the old file or the new one, never a mix), then ``fsync`` the
   folder so the new name itself survives a power cut;
4. on any exception, ``KeyboardInterrupt`` included, drop the temporary and
   re-raise.

Usage::

    with atomic_output("out.wav", overwrite=args.force, inputs=[args.input]) as tmp:
        with AudioWriter(tmp, rate, channels) as w:   # writes to the temp path
            ...

The yielded path is a :class:`TempPath`: a ``str`` (``/proc/self/fd/N``, or the
named temporary ``.STEM.XXXXXXXX.part.SUFFIX``) whose ``suffix`` is the output's,
for writers that pick the format from it, and whose ``fd`` (or None) a child
process must inherit to open it (ffmpeg: ``pass_fds``).

The path ``"-"`` (:data:`STDIO`) means standard output: nothing can be checked
nor renamed, so :func:`atomic_output` yields ``"-"`` itself and writers that
receive it write to stdout.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator

from .errors import OutputError

STDIO = "-"
"""The path meaning stdin (for readers) or stdout (for writers)."""


class TempPath(str):
    """A path to write that is not the output's own: ``suffix`` is the output's, ``fd`` the unnamed file's."""

    suffix: str = ""
    fd: int | None = None

    def __new__(cls, path: str, suffix: str, fd: int | None = None):
        self = super().__new__(cls, path)
        self.suffix, self.fd = suffix, fd
        return self


def path_suffix(path: str) -> str:
    """The suffix that names ``path``'s format (a :class:`TempPath` carries its output's)."""
    return path.suffix if isinstance(path, TempPath) else os.path.splitext(os.fspath(path))[1]


_AT_FDCWD, _AT_EMPTY_PATH = -100, 0x1000
_LINKABLE: dict[int, bool] = {}  # st_dev -> whether an unnamed file there can be given a name


def _link_fd(fd: int, path: str) -> None:
    """Give the unnamed file ``fd`` the name ``path`` (``linkat``; FileExistsError if taken).

    ``linkat(fd, "", AT_EMPTY_PATH)`` where the kernel allows it, else the unprivileged
    route through ``/proc/self/fd/N`` with ``AT_SYMLINK_FOLLOW``.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(fd, b"", _AT_FDCWD, os.fsencode(path), _AT_EMPTY_PATH) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), path)
    os.link(f"/proc/self/fd/{fd}", path, follow_symlinks=True)


def _unnamed_file(folder: str) -> int | None:
    """An ``O_TMPFILE`` descriptor in ``folder``, or None where the system, the file system or the
    kernel's rules for naming it later do not allow one (checked once per file system)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.isdir("/proc/self/fd"):
        return None
    unsupported = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT, errno.ENOTSUP)
    try:
        dev = os.stat(folder).st_dev  # an O_TMPFILE file lives on its folder's file system
        if dev not in _LINKABLE:
            # Probe with a throwaway file (a file named once cannot be named again) *before* the
            # real one is opened: the probe's name exists only between its link and its unlink,
            # before the output does (a kill -9 after the output opened used to be able to land there).
            probe_fd = os.open(folder, flag | os.O_WRONLY, 0o600)
            probe = os.path.join(folder, f".walloc-probe.{os.urandom(4).hex()}")
            try:
                _link_fd(probe_fd, probe)
                os.unlink(probe)
                _LINKABLE[dev] = True
            except OSError:
                _LINKABLE[dev] = False
            finally:
                os.close(probe_fd)
        if not _LINKABLE[dev]:
            return None
        fd = os.open(folder, flag | os.O_WRONLY, 0o666)  # the umask applies
    except OSError as e:
        if e.errno in unsupported:
            return None
        raise
    return fd


# errno -> one-line message for the OS errors a user can cause while writing.
_ERRNO_MESSAGES = {
    errno.ENOSPC: "disk full writing {}",
    errno.EDQUOT: "disk quota exceeded writing {}",
    errno.EROFS: "read-only file system, cannot write {}",
    errno.EACCES: "permission denied writing {}",
    errno.EPERM: "permission denied writing {}",
    errno.EFBIG: "file too large writing {}",
}


def output_error(exc: OSError, name: str) -> OutputError | None:
    """Map an ``OSError`` met while writing ``name`` to a one-line :class:`OutputError`.

    Returns None for errno values that are not the user's doing (those stay
    bugs with a traceback). Callers write ``raise output_error(e, p) or e``.
    """
    template = _ERRNO_MESSAGES.get(exc.errno)
    return OutputError(template.format(name)) if template else None


def same_file(a: str, b: str) -> bool:
    """True when paths ``a`` and ``b`` name the same file.

    ``os.path.samefile`` compares (device, inode) and so also sees hard links;
    it needs both files to exist, otherwise resolved paths are compared
    (symlinks, ``..`` and relative paths all resolve to the same string).
    """
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output(path: str, *, overwrite: bool = False, inputs: Iterable[str] = ()) -> None:
    """Raise :class:`OutputError` if ``path`` cannot or must not be written.

    Cheap and side-effect free, so a CLI can call it before loading a model.
    An input is never overwritten, even with ``overwrite=True``: reading and
    writing the same file would destroy it half-way.
    """
    path = os.fspath(path)
    if path == STDIO:
        return
    for source in inputs:
        source = os.fspath(source)
        if source != STDIO and same_file(path, source):
            raise OutputError(f"{path} is the input file {source}; refusing to overwrite an input")
    if os.path.isdir(path):
        raise OutputError(f"{path} is a directory")
    if os.path.lexists(path) and not overwrite:
        raise OutputError(f"{path} exists (use -f to overwrite)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"folder {folder} does not exist (cannot write {path})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"folder {folder} is not writable (cannot write {path})")


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # the portable way: set, then restore
    os.umask(mask)
    return mask


def _fsync(path: str, *, directory: bool = False) -> None:
    """Flush ``path``'s data (or a folder's entries) to the disk."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:  # some systems cannot open folders: best effort only
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _commit(tmp: str, path: str, overwrite: bool) -> None:
    """Move the finished temporary onto ``path`` atomically.

    Without ``overwrite`` we ``os.link`` instead of ``os.replace``: linking
    fails if ``path`` appeared while we were writing (another process, a
    second run), so a file created after :func:`check_output` is not
    clobbered either. File systems without hard links fall back to replace.
    """
    if not overwrite:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise OutputError(f"{path} exists (use -f to overwrite)") from None
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
        else:
            os.unlink(tmp)
            return
    os.replace(tmp, path)


def _commit_unnamed(tmp: TempPath, path: str, overwrite: bool, folder: str, stem: str, suffix: str) -> None:
    """Give the finished unnamed file its name: ``linkat`` straight onto ``path`` (fails if it
    appeared meanwhile), or, to replace, onto a fresh hidden name then ``os.replace``."""
    if not overwrite:
        try:
            _link_fd(tmp.fd, path)
        except FileExistsError:
            raise OutputError(f"{path} exists (use -f to overwrite)") from None
        return
    for _ in range(100):
        name = os.path.join(folder, f".{stem}.{os.urandom(4).hex()}.part{suffix}")
        try:
            _link_fd(tmp.fd, name)
            break
        except FileExistsError:
            continue
    else:
        raise OutputError(f"cannot find a free temporary name in {folder}")
    try:
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = ()
) -> Iterator[str]:
    """Yield a temporary path to write; it becomes ``path`` only on success.

    Args:
        path: the final output, or ``"-"`` for stdout (then ``"-"`` is yielded
            and nothing is checked, renamed or deleted).
        overwrite: allow replacing an existing ``path`` (the CLI's ``-f``).
        inputs: paths read by this command; ``path`` may be none of them.

    Raises:
        OutputError: before yielding, see :func:`check_output`; while
            writing, for disk full, quota, read-only file system and
            permission errors (the temporary is removed first).
    """
    path = os.fspath(path)
    if path == STDIO:
        try:
            yield STDIO
        except OSError as e:
            raise output_error(e, "<stdout>") or e
        return

    check_output(path, overwrite=overwrite, inputs=[os.fspath(p) for p in inputs])
    folder, base = os.path.split(os.path.abspath(path))
    stem, suffix = os.path.splitext(base)
    try:
        fd = _unnamed_file(folder)
    except OSError as e:
        raise output_error(e, path) or OutputError(f"cannot create a file in {folder}: {e.strerror}") from e
    if fd is not None:
        tmp = TempPath(f"/proc/self/fd/{fd}", suffix, fd)
        try:
            yield tmp
            os.fsync(fd)
            _commit_unnamed(tmp, path, overwrite, folder, stem, suffix)
            _fsync(folder, directory=True)
        except BaseException as e:
            if isinstance(e, OSError) and e.filename in (None, tmp, path):
                raise output_error(e, path) or e
            raise
        finally:
            os.close(fd)
        return
    try:
        fd, name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".part{suffix}", dir=folder)
    except OSError as e:
        raise output_error(e, path) or OutputError(f"cannot create a file in {folder}: {e.strerror}") from e
    os.close(fd)
    tmp = TempPath(name, suffix)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        yield tmp
        _fsync(tmp)
        _commit(tmp, path, overwrite)
        _fsync(folder, directory=True)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # Only errors about the file we write are ours to translate: an
        # EACCES on some *input* file must keep naming that file.
        if isinstance(e, OSError) and e.filename in (None, tmp, path):
            raise output_error(e, path) or e
        raise
