"""Atomic, durable writes and run locks: a crash, Ctrl-C or SIGKILL never leaves a half-written
output file, and two processes never write one run."""
import csv
import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from utils.errors import UserError

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


FILE_MODE = 0o666 & ~_umask()  # what open() would have created; mkstemp's own mode is 0600


def atomic_write(path, write) -> None:
    """Call ``write(binary_handle)`` on a temporary file beside ``path``, flush it to disk, give it
    the umask's mode and rename it into place, then flush the directory entry."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename itself is still atomic
    finally:
        os.close(fd)


def remove_orphans(directory) -> list:
    """Delete the temporary files a killed writer left in ``directory``; returns their names."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    orphans = sorted(directory.glob(f".*{TMP_SUFFIX}"))
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return [orphan.name for orphan in orphans]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def exclusive(lock_path, what: str):
    """Hold ``lock_path`` (created with O_EXCL, holding this process's pid) for the block. A lock of
    a live process is a clear error; a lock whose process is gone is taken over."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
            break
        except FileExistsError:
            try:
                owner = int(lock_path.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                raise UserError(f"{what} is being written by process {owner} (lock {lock_path}); wait for it to "
                                f"finish or stop it") from None
            lock_path.unlink(missing_ok=True)  # its owner is gone: take it over
    else:
        raise UserError(f"cannot take the lock {lock_path}; remove it if no process is writing {what}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock_path.unlink(missing_ok=True)


def save_json(obj, path) -> None:
    save_text(json.dumps(obj, indent=2) + "\n", path)


def save_torch(obj, path) -> None:
    atomic_write(path, lambda h: torch.save(obj, h))


def save_csv(rows: list, path) -> None:
    """Write a list of flat dicts as CSV; the header is the union of keys in first-seen order."""
    header = list(dict.fromkeys(key for row in rows for key in row))

    def write(handle):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
        handle.write(text.getvalue().encode())

    atomic_write(path, write)


def load_checkpoint(path):
    """Load a ``model.pt`` written by :func:`save_torch` without unpickling arbitrary code."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_text(text: str, path) -> None:
    atomic_write(path, lambda h: h.write(text.encode()))
