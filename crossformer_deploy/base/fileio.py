"""Atomic file writes (an interrupted export never leaves a half-written model or a temp file behind),
output checks made before the work starts, and hashing with one-line errors."""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator

from crossformer_deploy.base.errors import UnreadableFileError, UsageError, first_line, os_reason
from crossformer_deploy.base.interrupt import deferred

_live_temps: set[str] = set()  # temp files of atomic writes now in progress


def check_output_path(path: str | os.PathLike) -> str:
    """The absolute path, once it is known that a file can be created there (so a long export does not
    fail at its last step)."""
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise UsageError(f"output directory does not exist: {parent}")
    if os.path.isdir(path):
        raise UsageError(f"output path is a directory: {path}")
    check_writable_dir(parent)
    return path


def check_writable_dir(folder: str | os.PathLike) -> None:
    """UsageError unless a file can be created in ``folder``. Tried for real: permission bits do not tell
    (root, ACLs, read-only mounts)."""
    folder = os.fspath(folder)
    with deferred():
        try:
            fd, probe = tempfile.mkstemp(prefix=".crossformer-write-test.", dir=folder)
        except OSError as e:
            raise UsageError(f"cannot write to {folder}: {e.strerror or first_line(e)}") from None
        os.close(fd)
        os.unlink(probe)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path in the target's directory; rename it over ``path`` only on success."""
    path = check_output_path(path)
    with deferred():  # a signal between creating and recording the temp file would orphan it
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                                   dir=os.path.dirname(path))
        os.close(fd)
        _live_temps.add(tmp)
    try:
        yield tmp
        with deferred():
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
            os.replace(tmp, path)
            _live_temps.discard(tmp)
    finally:
        _remove(tmp)


def remove_temp_files() -> None:
    """Delete the temp files of atomic writes still in progress (after an interruption)."""
    for tmp in list(_live_temps):
        _remove(tmp)


def _remove(tmp: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    _live_temps.discard(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as e:
        raise UnreadableFileError(f"cannot read {os.fspath(path)}: {os_reason(e)}") from None
    return h.hexdigest()

