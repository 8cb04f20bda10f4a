"""Fashion-MNIST from its IDX files (gzipped or not), zero-padded 28→32, 3 channels."""
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datasets.base import ImageDataset, TrainDefaults, hwc_to_chw_uint8, require_dir
from utils.errors import UserError

# Not in the paper: CIFAR-10's schedule (§3.4) reused.
DEFAULTS = TrainDefaults(epochs=100, milestone_fractions=(0.5, 0.7))
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
IDX_MAGIC = {3: 2051, 1: 2049}  # number of dimensions → magic number of an unsigned-byte IDX file


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz", root / "raw" / stem, root / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise UserError(f"Fashion-MNIST file {stem}[.gz] not found under {root}; point data_path at "
                    f"the directory with the four IDX files (apt-get install dataset-fashion-mnist "
                    f"puts them in /usr/share/datasets/fashion-mnist)")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file: big-endian magic, dimensions, then the raw bytes."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path} ({exc}); the file looks corrupt, re-download it") from None
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != IDX_MAGIC[ndim]:
        raise UserError(f"{path} is not a {ndim}-D unsigned-byte IDX file (bad magic number); "
                        f"the file looks corrupt, re-download it")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise UserError(f"{path} holds {len(raw) - header} bytes of data but its header says "
                        f"{shape}; the file looks truncated, re-download it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load(data_path=None, seed: int = 0, download: bool = False) -> ImageDataset:
    root = require_dir(data_path, "fmnist", "train-images-idx3-ubyte[.gz] and the other IDX files "
                       "(apt-get install dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist)",
                       downloadable=False)
    arrays = {key: read_idx(_find(root, stem), 3 if key.endswith("images") else 1)
              for key, stem in FILES.items()}
    split = {}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if len(images) != len(labels) or labels.max(initial=0) > 9:
            raise UserError(f"Fashion-MNIST {part} files disagree ({len(images)} images, "
                            f"{len(labels)} labels, max label {labels.max(initial=0)}); re-download them")
        split[part] = (F.pad(hwc_to_chw_uint8(images), (2, 2, 2, 2)),
                       torch.from_numpy(labels.astype(np.int64)))
    return ImageDataset("fmnist", *split["train"], *split["test"], num_classes=10,
                        defaults=DEFAULTS, class_names=CLASS_NAMES)

