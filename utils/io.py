"""Atomic writes: a crash or Ctrl-C never leaves a half-written output file."""
import csv
import io
import json
import os
import tempfile
from pathlib import Path

import torch


def atomic_write(path, write) -> None:
    """Call ``write(binary_handle)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
