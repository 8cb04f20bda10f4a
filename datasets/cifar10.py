"""CIFAR-10 from the python pickle batches (``cifar-10-batches-py``)."""
import pickle
from pathlib import Path

import numpy as np
import torch

from datasets.base import ImageDataset, TrainDefaults, download as fetch, require_dir
from utils.errors import UserError

DEFAULTS = TrainDefaults(epochs=100, milestone_fractions=(0.5, 0.7))  # paper §3.4: 100 epochs, ÷10 at 50, 70
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batch_dir(root: Path) -> Path:
    for candidate in (root / FOLDER, root):
        if (candidate / "test_batch").is_file():
            return candidate
    raise UserError(f"no CIFAR-10 python batches under {root}: expected {root / FOLDER}/data_batch_1 "
                    f"… test_batch; extract cifar-10-python.tar.gz there or ask for the download (download=True; --download on the command line)")


# What a real batch (or a numpy re-save of one) needs to rebuild: dicts, lists, strings, bytes and
# ints are pickle's own opcodes; these globals rebuild numpy arrays, dtypes and scalars. Nothing
# else is ever imported or called, so a crafted file cannot run code.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class NotABatch(pickle.UnpicklingError):
    pass


class BatchUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only :data:`SAFE_GLOBALS`."""

    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise NotABatch(f"{module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path):
    """One pickle batch → (uint8 (N,3,32,32), int64 labels), read with :class:`BatchUnpickler`."""
    try:
        with open(path, "rb") as handle:
            entry = BatchUnpickler(handle, encoding="latin1").load()
        entry = {key.decode() if isinstance(key, bytes) else key: value for key, value in entry.items()}
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(entry["labels"], dtype=np.int64)
    except FileNotFoundError:
        raise UserError(f"CIFAR-10 batch {path} is missing; re-extract cifar-10-python.tar.gz") from None
    except NotABatch as refused:
        raise UserError(f"{path} is not a CIFAR-10 batch: it asks to load {refused}, which a batch never "
                        f"holds, so it was not read; re-extract cifar-10-python.tar.gz") from None
    except Exception as exc:
        raise UserError(f"cannot read CIFAR-10 batch {path} ({type(exc).__name__}); the file looks "
                        f"corrupt, re-extract cifar-10-python.tar.gz") from None
    if len(data) != len(labels):
        raise UserError(f"CIFAR-10 batch {path} has {len(data)} images but {len(labels)} labels; re-extract it")
    return torch.from_numpy(data.copy()), torch.from_numpy(labels)


def load(data_path=None, seed: int = 0, download: bool = False) -> ImageDataset:
    if download:
        root = Path(data_path or "data").expanduser()
        from torchvision.datasets import CIFAR10

        fetch("CIFAR-10", root, lambda: CIFAR10(str(root), train=True, download=True),
              f"{CIFAR10.url} and extract it")
    root = require_dir(data_path if not download else str(root), "cifar10",
                       f"{FOLDER}/ (the extracted python version)")
    folder = _batch_dir(root)
    train = [read_batch(folder / name) for name in TRAIN_BATCHES]
    test_x, test_y = read_batch(folder / "test_batch")
    return ImageDataset("cifar10", torch.cat([x for x, _ in train]), torch.cat([y for _, y in train]),
                        test_x, test_y, num_classes=10, defaults=DEFAULTS, class_names=CLASS_NAMES)
