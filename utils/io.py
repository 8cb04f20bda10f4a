"""Atomic, durable writes and run locks: a crash, Ctrl-C or SIGKILL never leaves a half-written
output file, and two processes never write one run."""
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from utils.errors import ParameterError, UserError

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
    except OSError as error:  # a write names no file: name the one that could not be written
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def check_directory(path, parameter: str) -> None:
    """Raise ParameterError when ``path`` cannot become a directory: it, or the nearest of its
    ancestors that exists, is not a directory. Checked before any work, so a typo costs nothing."""
    path = Path(path).expanduser()
    existing = next((part for part in (path, *path.parents) if part.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is" if existing == path else f"lies under {existing}, which is"
        raise ParameterError(parameter, f"{path} {where} a file, not a directory; choose a directory")


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


def remove_path(path) -> None:
    """Remove ``path`` whatever it is: a link or a file is unlinked (never what it points to), a
    directory removed with its contents."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)



def first_missing(path):
    """The outermost of ``path`` and its parents that does not exist (what creating ``path`` would
    create first, and removing it would take away again), or None when ``path`` exists."""
    path = Path(path).expanduser().absolute()
    missing = None
    for part in (path, *path.parents):
        if part.exists() or part.is_symlink():
            return missing
        missing = part
    return missing


def remove_empty_dirs(path, top) -> None:
    """Remove the directory ``path`` and its parents up to ``top`` (one of them, or None for none), each
    only while it is empty: the folders a failed step created, and nothing another process wrote."""
    if top is None:
        return
    path, top = Path(path).expanduser().absolute(), Path(top)
    for part in (path, *path.parents):
        try:
            part.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # not empty, or not ours to remove: what is above it stays too
            return
        if part == top:
            return

def remove_orphans(directory) -> list:
    """Delete the temporary files a killed writer left in ``directory``; returns their names."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    orphans = sorted(directory.glob(f".*{TMP_SUFFIX}"))
    for orphan in orphans:
        orphan.unlink(missing_ok=True)
    return [orphan.name for orphan in orphans]


def _holder(lock_path: Path) -> str:
    """Who holds ``lock_path``, as its holder wrote it ("host pid N"), for the error message."""
    try:
        return lock_path.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextmanager
def exclusive(lock_path, what: str):
    """Hold ``lock_path`` for the block, or raise UserError at once if another process holds it.

    The lock is an advisory ``flock`` taken through the filelock package: the kernel releases it
    when its holder exits, however it exits (SIGKILL, a node that Slurm preempted), so there is no
    stale lock to judge by a pid, no race between a check and a takeover, and a lock file left
    behind by a dead holder, on this host or another, is simply taken. On NFS, Linux maps flock to
    POSIX locks served by lockd, so it holds across the nodes of a cluster. The holder writes its
    host and pid into the file, only to say who holds it."""
    import socket

    from filelock import FileLock, Timeout

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=0, mode=FILE_MODE)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{what} is being written by {_holder(lock_path)} (lock {lock_path}); wait for it to "
                        f"finish or stop it") from None
    try:
        try:
            lock_path.write_text(f"host {socket.gethostname()} pid {os.getpid()}\n")
        except OSError:
            pass  # the name is only for messages; the lock itself is held
        yield
    finally:
        lock.release()  # the file stays: unlinking it would let a waiter lock an inode no one else sees


@contextmanager
def waiting_lock(lock_path):
    """Hold ``lock_path`` for the block, waiting for any other holder first (the same kernel lock as
    :func:`exclusive`): e.g. one download into a shared folder at a time, the others then find the
    files there."""
    from filelock import FileLock

    Path(lock_path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), mode=FILE_MODE):
        yield


def save_json(obj, path) -> None:
    save_text(json.dumps(obj, indent=2) + "\n", path)


def read_json(path, kind: type, fix: str):
    """The JSON file ``path`` holding a ``kind`` (dict or list), or a UserError in one line naming it,
    what is wrong (unreadable, not JSON, a git merge conflict, another type) and ``fix``: a record
    carried across machines by git can come back with conflict markers in it."""
    path = Path(path)
    try:
        text = path.read_text()
        value = json.loads(text)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text file; {fix}") from None
    except OSError as error:
        raise UserError(f"cannot read {path} ({error.strerror or error}); {fix}") from None
    except ValueError as error:
        conflict = any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in text.splitlines())
        what = "holds a git merge conflict" if conflict else f"is not valid JSON ({error})"
        raise UserError(f"{path} {what}; {fix}") from None
    if not isinstance(value, kind):
        raise UserError(f"{path} holds a JSON {type(value).__name__}, not a {kind.__name__}; {fix}")
    return value


def state_digest(state: dict) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes, in key order: equal digests mean
    the same weights, bit for bit (a retrained checkpoint is checked against the recorded one)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{tensor.dtype}|{tuple(state[key].shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_torch(obj, path) -> None:
    """torch.save into memory, then an ordinary write: a full disk then raises the OSError saying so
    (torch.save writing into a file reports it as its own RuntimeError, without the cause)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


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


class UnreadableCheckpoint(UserError):
    """A checkpoint that cannot be loaded: empty, truncated, or holding objects other than tensors
    and plain values (refused unread, since unpickling them could run code)."""


def load_checkpoint(path, keys=()) -> dict:
    """Load a dict written by :func:`save_torch` (model.pt, resume.pt) without unpickling arbitrary
    code, holding at least ``keys``; anything else raises :class:`UnreadableCheckpoint`, whose
    message says what is wrong with the file (the caller adds what to do). PyTorch's own refusal
    of a crafted file ends by suggesting ``weights_only=False``, which would run its payload: it is
    never shown."""
    import pickle
    import zipfile

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UnreadableCheckpoint(f"{path} holds objects other than tensors and plain values (refused unread: it "
                                   f"was not written by this project, or was tampered with)") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError) as error:
        kind = "is empty" if path.is_file() and path.stat().st_size == 0 else "is truncated or corrupt"
        raise UnreadableCheckpoint(f"{path} {kind} ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise UnreadableCheckpoint(f"{path} holds a {type(state).__name__}, not a checkpoint's dict")
    missing = [key for key in keys if key not in state]
    if missing:
        raise UnreadableCheckpoint(f"{path} lacks {', '.join(missing)} (written by another version?)")
    return state



def fit_weights(model, state, path, what: str) -> None:
    """``model.load_state_dict(state)``, the weights ``state`` read from the checkpoint ``path``; weights
    that do not fit (another architecture or width, not a state dict at all) raise
    :class:`UnreadableCheckpoint` naming ``path``, ``what`` it should fit and the first mismatch, and
    the caller adds what to do (as for :func:`load_checkpoint`)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        first = lines[1] if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1 else lines[0]
        raise UnreadableCheckpoint(f"{path} does not fit {what} "
                                   f"({first if len(first) <= 200 else first[:199] + '…'})") from None

def save_text(text: str, path) -> None:
    atomic_write(path, lambda h: h.write(text.encode()))
