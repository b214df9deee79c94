"""Atomic writes: an artifact is either complete at its final path or absent, after a kill or a power loss.

A file is flushed to disk (``fsync``) before it is renamed into place, and its directory after, so that a crash
cannot publish the new name over data that never reached the disk (an empty file where the old one was).

Staging files and directories are created with the modes a plain ``open(path, "w")`` or ``os.mkdir`` would give
(0666 and 0777 less the umask), not ``tempfile``'s private 0600/0700: they are renamed into place, so their mode
is the mode of the published artifact.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from adaret.core.errors import AdaretError

# Every temporary file or directory adaret writes next to an output ends so: what a killed run leaves behind is
# recognisable as adaret's own, and removed by the next write into that directory (adaret.core.outputs).
STAGING_SUFFIX = ".adaret.tmp"


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` (and parents) or raise a one-line error if that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AdaretError(f"cannot create output directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise AdaretError(f"output directory {path} is not writable")


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; it is renamed onto ``final`` only on success."""
    final = Path(final)
    ensure_writable_dir(final.parent)
    tmp = staging_file(final.parent, f".{final.name}.")
    try:
        yield tmp
        durable_replace([(tmp, final)])
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def durable_replace(moves: Iterable[tuple[Path, Path]]) -> None:
    """``os.replace`` each (staged, final) pair, each staged file flushed first and each final directory after."""
    moves = list(moves)
    for staged, final in moves:
        fsync_path(staged, shown=final)
    for staged, final in moves:
        os.replace(staged, final)
    for directory in dict.fromkeys(Path(final).parent for _, final in moves):
        fsync_path(directory, directory=True)


# Filesystems that cannot flush a directory (or, rarely, a file) say so with these; there is nothing to wait for.
_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.EBADF, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.EOPNOTSUPP}


def fsync_path(path: Path, *, directory: bool = False, shown: Path | None = None) -> None:
    """Flush ``path`` (a file, or with ``directory`` a directory's entries) to disk; a write error is one line
    naming ``shown`` (the final name of a staged file) or ``path``."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if directory:  # not POSIX: a directory cannot be opened, and renames are not made durable this way
            return
        raise AdaretError(f"cannot write {shown or path}: {exc.strerror}") from None
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_UNSUPPORTED:
            raise AdaretError(f"cannot write {shown or path}: {exc.strerror}") from None
    finally:
        os.close(fd)


def staging_file(directory: Path, prefix: str) -> Path:
    """Create an empty ``<prefix><random>.adaret.tmp`` file in ``directory``, as ``open(path, "w")`` would (mode
    0666 less the umask), and return its path."""
    return _staging(Path(directory), prefix, lambda path: os.close(os.open(path, _CREATE_FLAGS, 0o666)))


def staging_dir(directory: Path, prefix: str) -> Path:
    """Create an empty ``<prefix><random>.adaret.tmp`` directory in ``directory``, as ``os.mkdir`` would (mode 0777
    less the umask), and return its path."""
    return _staging(Path(directory), prefix, lambda path: os.mkdir(path, 0o777))


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _staging(directory: Path, prefix: str, create: Callable[[Path], None]) -> Path:
    # tempfile.mkstemp/mkdtemp would do the same but force 0600/0700, which the rename would then publish
    for _ in range(100):
        path = directory / f"{prefix}{secrets.token_hex(6)}{STAGING_SUFFIX}"
        try:
            create(path)
        except FileExistsError:
            continue
        except OSError as exc:
            raise AdaretError(f"cannot write in {directory}: {exc.strerror}") from None
        return path
    raise AdaretError(f"cannot create a staging name in {directory}")  # 100 collisions of 48 random bits


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
