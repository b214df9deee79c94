"""Atomic writes: an artifact is either complete at its final path or absent."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
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
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=STAGING_SUFFIX, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
