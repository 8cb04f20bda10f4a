"""CelebA in torchvision's layout, 8 classes from three attributes as in WaNet, 32×32."""
from pathlib import Path

import torch

from datasets.base import ImageDataset, TrainDefaults, decode_image_files, download as fetch, load_cached, require_dir
from utils.errors import UserError

DEFAULTS = TrainDefaults(epochs=40, milestone_fractions=(0.5, 0.75))  # paper §3.4: 40 epochs, ÷10 at 20, 30
FOLDER = "celeba"
# The label is the 3-bit number Heavy_Makeup·4 + Mouth_Slightly_Open·2 + Smiling (WaNet's CelebA).
ATTRIBUTES = ("Heavy_Makeup", "Mouth_Slightly_Open", "Smiling")
PARTITIONS = {"train": 0, "test": 2}  # list_eval_partition.txt: 0 train, 1 valid, 2 test
CACHE_NAME = "mlmmdr_cache_32.pt"


def _base(root: Path) -> Path:
    for candidate in (root / FOLDER, root):
        if (candidate / "list_attr_celeba.txt").is_file():
            return candidate
    raise UserError(f"no CelebA files under {root}: expected {root / FOLDER}/list_attr_celeba.txt, "
                    f"list_eval_partition.txt and img_align_celeba/ (torchvision's CelebA layout)")


def read_attribute_labels(base: Path) -> dict:
    """list_attr_celeba.txt → {filename: 8-class label}."""
    path = base / "list_attr_celeba.txt"
    try:
        lines = path.read_text().splitlines()
        names = lines[1].split()
        columns = [names.index(attr) for attr in ATTRIBUTES]
        labels = {}
        for line in lines[2:]:
            if not line.strip():
                continue
            fields = line.split()
            bits = [int(fields[1 + c]) > 0 for c in columns]
            labels[fields[0]] = bits[0] * 4 + bits[1] * 2 + bits[2]
    except (IndexError, ValueError) as exc:
        raise UserError(f"cannot parse {path} ({exc}); the file looks corrupt, re-download it") from None
    return labels


def read_partitions(base: Path) -> dict:
    path = base / "list_eval_partition.txt"
    if not path.is_file():
        raise UserError(f"{path} is missing; CelebA needs its official partition file")
    try:
        return {name: int(part) for name, part in (line.split() for line in path.read_text().splitlines()
                                                    if line.strip())}
    except ValueError as exc:
        raise UserError(f"cannot parse {path} ({exc}); the file looks corrupt, re-download it") from None


def load(data_path=None, seed: int = 0, download: bool = False) -> ImageDataset:
    if download:
        from torchvision.datasets import CelebA

        root = Path(data_path or "data").expanduser()
        fetch("CelebA", root, lambda: CelebA(str(root), split="all", download=True),
              f"CelebA's img_align_celeba.zip and annotation files into {FOLDER}/ and extract the zip")
        data_path = data_path or "data"
    base = _base(require_dir(data_path, "celeba", f"{FOLDER}/ in torchvision's CelebA layout"))

    def build():
        labels, partitions = read_attribute_labels(base), read_partitions(base)
        tensors = {}
        for split, part in PARTITIONS.items():
            names = sorted(name for name, p in partitions.items() if p == part)
            missing = [name for name in names if name not in labels]
            if missing:
                raise UserError(f"{len(missing)} {split} images (e.g. {missing[0]}) have no attributes "
                                f"in list_attr_celeba.txt; re-download the annotation files")
            paths = [base / "img_align_celeba" / name for name in names]
            tensors[f"{split}_x"] = decode_image_files(paths, progress=f"decoding CelebA {split}")
            tensors[f"{split}_y"] = torch.tensor([labels[name] for name in names], dtype=torch.long)
        return tensors

    t = load_cached(base / CACHE_NAME, build)
    names = [f"{'M' if c & 4 else 'm'}{'O' if c & 2 else 'o'}{'S' if c & 1 else 's'}" for c in range(8)]
    return ImageDataset("celeba", t["train_x"], t["train_y"], t["test_x"], t["test_y"], num_classes=8,
                        defaults=DEFAULTS, class_names=names)
