"""Outputs that never destroy or mix data: claimed directories and files, one writer at a time, published sets.

- A command claims its output before it does any work: ``output_dir`` for a directory (a checkpoint, an export),
  ``output_file`` for one file (an optimised or INT8 graph). A file where a directory is meant, or the reverse, is a
  one-line error; so is an existing non-empty directory or an existing file unless ``overwrite`` is set.
  Overwriting replaces only the files the command writes (and the earlier members of the same set): every other
  file in the directory stays.
- The claim holds a lock: ``fcntl.flock`` on ``.adaret.lock`` in the directory (``.<name>.adaret.lock`` next to a
  file output), a file that records the holder's pid. A second writer fails at once and names that pid. The kernel
  drops the lock of a process that dies, so a lock file left by a killed run is simply taken over.
- Files are written into staging (``.<name>.<random>.adaret.tmp``) and renamed into place. Staging that a killed
  run left behind is removed when the directory is next claimed (only staging older than the new claim).
- An export directory is published as a set: ``manifest.json``, written last and atomically, lists each file with
  its sha256; ``check_manifest`` refuses a directory whose files do not match it (a run killed while it renamed
  its files, a stale ``model.opt.onnx``).
- A directory the claim created is removed again, if it is still empty, when the command fails.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adaret.core.errors import AdaretError
from adaret.core.fileio import (
    STAGING_SUFFIX,
    atomic_file,
    durable_replace,
    ensure_writable_dir,
    sha256_file,
    staging_dir,
)
from adaret.core.text_files import parse_json, read_utf8

try:
    import fcntl
except ImportError:  # not POSIX: writers are not locked against each other
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".adaret.lock"
LOCK_SUFFIX = ".adaret.lock"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "adaret-export-manifest"
# The files of an export set that ``adaret.runtime.load(dir)`` picks from (and their pass reports): a later export
# into the directory supersedes them, and ``adaret optimize`` writing one of them updates the manifest.
EXPORT_GRAPH = re.compile(r"model(?:_seq\d+)?(?:\.opt)?\.onnx(?:\.data)?|model(?:_seq\d+)?\.opt\.passes\.json")
OVERWRITE_HINT = "pass --overwrite (overwrite=True)"


# --------------------------------------------------------------------------------------------------- the lock


class OutputLock:
    """An exclusive, non-blocking lock on ``path`` (a lock file), held until ``release``."""

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise AdaretError(f"cannot lock {self.what}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise AdaretError(f"cannot lock {self.what}: {exc.strerror}") from None
                by = f"another adaret process (pid {holder})" if holder else "another adaret process"
                raise AdaretError(f"{self.what} is being written by {by}; wait for it to finish, or write "
                                  "somewhere else") from None
            try:  # the holder before us may have removed the file after we opened it: then lock the new one
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # before unlocking: a waiting writer then sees a new inode and retries
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# --------------------------------------------------------------------------------------------------- claims


@dataclass
class OutputDir:
    """A claimed output directory: stage files with ``staging``, move them into place with ``publish``."""

    path: Path
    started: float  # time.time() at the claim: staging older than this was left by an earlier run
    created: Path | None = None  # the top-most directory the claim created (removed again on failure if empty)
    _staging: list[Path] = field(default_factory=list)

    def staging(self, name: str = "staging") -> Path:
        """A fresh staging directory inside the output directory (removed when the claim ends)."""
        staged = staging_dir(self.path, f".{name}.")  # its files are published with the modes they have here
        self._staging.append(staged)
        return staged

    def publish(self, staged: Path, *, last: Sequence[str] = (), supersedes: Callable[[str], bool] | None = None,
                manifest: bool = False) -> list[str]:
        """Rename every file of ``staged`` into the directory (``last`` ones last) and remove ``staged``.

        Files already in the directory that ``supersedes`` accepts, and (with ``manifest``) the files the
        previous manifest listed, are removed when this set does not have them. With ``manifest``, the new
        ``manifest.json`` is written last: until then the old one describes the directory, so a run killed
        half-way leaves files that do not match it, which ``check_manifest`` reports.
        """
        names = sorted(p.name for p in staged.iterdir() if p.is_file() and not p.name.startswith("."))
        names = [n for n in names if n not in last] + [n for n in last if n in names]
        entries = {n: _entry(staged / n) for n in names} if manifest else {}
        previous = set(read_manifest(self.path) or {}) if manifest else set()
        durable_replace((staged / name, self.path / name) for name in names)
        stale = {p.name for p in self.path.iterdir() if p.is_file() and supersedes and supersedes(p.name)}
        for name in sorted((stale | previous) - set(names) - {MANIFEST_NAME}):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                (self.path / name).unlink()
        if manifest:
            write_manifest(self.path, entries)
        shutil.rmtree(staged, ignore_errors=True)
        return names

    def _discard_staging(self) -> None:
        for staged in self._staging:
            shutil.rmtree(staged, ignore_errors=True)


_HELD: dict[str, OutputDir] = {}  # directories this process has claimed: a nested claim (a command around a
_HELD_LOCK = threading.Lock()  # library call) joins the outer one


@contextlib.contextmanager
def output_dir(path: str | Path, *, overwrite: bool = False, what: str = "output directory") -> Iterator[OutputDir]:
    """Claim ``path`` as an output directory for the duration of the block (see the module docstring)."""
    path = Path(path)
    key = os.path.realpath(path)
    with _HELD_LOCK:
        held = _HELD.get(key)
    if held is not None:
        yield held
        return
    if path.exists() and not path.is_dir():
        raise AdaretError(f"{what} {path} is a file, not a directory")
    created = _make_dirs(path)
    lock = OutputLock(path / LOCK_NAME, f"{what} {path}")
    try:
        lock.acquire()
    except BaseException:
        _remove_created(path, created)
        raise
    claim = OutputDir(path, time.time(), created)
    with _HELD_LOCK:
        _HELD[key] = claim
    succeeded = False
    try:
        remove_stale_staging(path, claim.started)
        if not overwrite and _has_files(path):
            raise AdaretError(f"{what} {path} is not empty; {OVERWRITE_HINT} to write into it (only the files "
                              "this command writes are replaced)")
        yield claim
        succeeded = True
    finally:
        with _HELD_LOCK:
            _HELD.pop(key, None)
        claim._discard_staging()
        lock.release()
        if not succeeded:
            _remove_created(path, created)


@contextlib.contextmanager
def output_file(path: str | Path, *, overwrite: bool = False, what: str = "output") -> Iterator[Path]:
    """Claim one output file: refuse a directory, or an existing file without ``overwrite``; lock it while the block
    writes it; remove the directories made for it if the block fails."""
    path = Path(path)
    if path.is_dir():
        raise AdaretError(f"{what} {path} is a directory, not a file")
    parent = path.parent
    created = _make_dirs(parent)
    lock = OutputLock(parent / f".{path.name}{LOCK_SUFFIX}", f"{what} {path}")
    try:
        lock.acquire()
    except BaseException:
        _remove_created(parent, created)
        raise
    succeeded = False
    try:
        remove_stale_staging(parent, time.time(), prefix=f".{path.name}.")
        if path.exists() and not overwrite:
            raise AdaretError(f"{what} {path} already exists; {OVERWRITE_HINT} to replace it")
        yield path
        succeeded = True
    finally:
        lock.release()
        if not succeeded:
            _remove_created(parent, created)


def _make_dirs(path: Path) -> Path | None:
    """Create ``path`` with its parents; return the top-most directory that did not exist before."""
    top = None
    probe = path
    while not probe.exists() and probe != probe.parent:
        top = probe
        probe = probe.parent
    ensure_writable_dir(path)
    return top


def _remove_created(path: Path, created: Path | None) -> None:
    """Remove ``path`` and its parents up to ``created`` while they are empty (a failed command leaves none)."""
    if created is None:
        return
    probe = path
    while True:
        try:
            probe.rmdir()
        except OSError:
            return
        if probe == created or probe == probe.parent:
            return
        probe = probe.parent


def _has_files(path: Path) -> bool:
    return any(not entry.endswith(LOCK_SUFFIX) for entry in os.listdir(path))


def remove_stale_staging(directory: Path, before: float, prefix: str = ".") -> list[str]:
    """Remove adaret's staging (``<prefix>*.adaret.tmp``) in ``directory`` that is older than ``before``."""
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(STAGING_SUFFIX)):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime >= before:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            except OSError:
                continue
            removed.append(entry.name)
    return removed


# --------------------------------------------------------------------------------------------------- manifest


def _entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def write_manifest(directory: Path, entries: dict[str, dict]) -> Path:
    path = Path(directory) / MANIFEST_NAME
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": dict(sorted(entries.items()))}, indent=2)
                       + "\n")
    return path


def read_manifest(directory: Path) -> dict[str, dict] | None:
    """The files ``manifest.json`` lists (name -> {sha256, size_bytes}); None where there is no manifest."""
    path = Path(directory) / MANIFEST_NAME
    if not path.exists():
        return None
    raw = parse_json(read_utf8(path, str(path), f"re-run the export into {directory}"), str(path),
                     f"re-run the export into {directory}")
    files = raw.get("files") if isinstance(raw, dict) and raw.get("format") == MANIFEST_FORMAT else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
        raise AdaretError(f"{path} is not an adaret export manifest; re-run the export into {directory}")
    for name in files:
        _check_listed_name(path, name)
    return files


def _check_listed_name(manifest: Path, name: str) -> None:
    """A manifest lists plain file names of its own directory: anything else would make ``check_manifest`` hash,
    or ``publish`` delete, a file elsewhere."""
    parts = name.replace("\\", "/").split("/")
    control = any(ord(char) < 32 for char in name)  # NUL, and newlines that would split the messages naming it
    if not name or control or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise AdaretError(f"{manifest} lists {name[:80]!r}, which is not a file name inside {manifest.parent}; "
                          "re-run the export into it")


def holds_only_an_export(directory: Path) -> bool:
    """True when every file in ``directory`` belongs to the export set its manifest lists: re-running an export
    into it replaces that set and mixes nothing (a hidden lock or staging entry does not count)."""
    try:
        listed = read_manifest(directory)
    except AdaretError:
        return False
    if listed is None:
        return False
    return all(name in listed or name == MANIFEST_NAME or name.startswith(".") for name in os.listdir(directory))


def check_manifest(directory: Path, picked: Iterable[Path]) -> None:
    """Refuse an export directory whose files do not match its manifest (nothing to check without one).

    Every listed file that is present must have its listed size and sha256, and every file in ``picked`` (what
    the caller is about to use) must be listed.
    """
    directory = Path(directory)
    files = read_manifest(directory)
    if files is None:
        return
    fix = f"re-run the export into {directory}, or delete its {MANIFEST_NAME} to use the files as they are"
    for file in picked:
        if file.name not in files:
            raise AdaretError(f"{directory}: {file.name} is not listed in {MANIFEST_NAME} (a file from another "
                              f"export?); {fix}")
    present = {name: file for name in files if (file := _listed_file(directory, name, fix)) is not None}
    for name, file in present.items():  # every name is checked before anything is hashed
        entry = files[name]
        try:
            matches = file.stat().st_size == entry.get("size_bytes", file.stat().st_size) and \
                sha256_file(file) == entry["sha256"]
        except OSError as exc:
            raise AdaretError(f"{directory}: cannot read {name[:80]!r}: {exc.strerror}; {fix}") from None
        if not matches:
            raise AdaretError(f"{directory}: {name} does not match {MANIFEST_NAME} (stale, or from an interrupted "
                              f"export); {fix}")


def _listed_file(directory: Path, name: str, fix: str) -> Path | None:
    """The listed file, if present; a name that resolves outside ``directory`` (through a symlink) is refused."""
    file = directory / name
    try:
        inside = file.resolve().is_relative_to(directory.resolve())
        present = file.is_file()
    except (OSError, ValueError, RuntimeError) as exc:  # too long, a symlink loop, a lone surrogate
        why = getattr(exc, "strerror", None) or "not a valid file name, or a symlink loop"
        raise AdaretError(f"{directory}: {MANIFEST_NAME} lists {name[:80]!r}, which cannot be looked up ({why}); "
                          f"{fix}") from None
    if not inside:
        raise AdaretError(f"{directory}: {MANIFEST_NAME} lists {name[:80]!r}, which resolves outside the "
                          f"directory; {fix}")
    return file if present else None  # a listed file that was removed is not used, so it cannot mix sets


def refresh_manifest(directory: Path, names: Iterable[str]) -> None:
    """After a command replaced files of an export set: record their new hashes in the directory's manifest.

    Only files the manifest already lists, or files of the export's own names (``EXPORT_GRAPH``), are recorded; a
    directory without a manifest is left without one. The directory's lock is taken, so this fails at once while
    an export is writing there.
    """
    directory = Path(directory)
    listed = read_manifest(directory)
    if listed is None:
        return
    names = [n for n in names if n in listed or EXPORT_GRAPH.fullmatch(n)]
    if not names:
        return
    lock = OutputLock(directory / LOCK_NAME, f"export directory {directory}")
    if os.path.realpath(directory) not in _HELD:
        lock.acquire()
    try:
        files = read_manifest(directory) or {}
        for name in names:
            if (directory / name).is_file():
                files[name] = _entry(directory / name)
        write_manifest(directory, files)
    finally:
        lock.release()
