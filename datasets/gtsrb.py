"""GTSRB in torchvision's layout (43 classes), resized to 32×32."""
import csv
from pathlib import Path

import torch

from datasets.base import ImageDataset, TrainDefaults, decode_image_files, download as fetch, load_cached, require_dir
from utils.errors import UserError

# Not in the paper: CIFAR-10's schedule (§3.4) reused.
DEFAULTS = TrainDefaults(epochs=100, milestone_fractions=(0.5, 0.7))
FOLDER = "gtsrb"
NUM_CLASSES = 43
CACHE_NAME = "mlmmdr_cache_32.pt"


def _base(root: Path) -> Path:
    for candidate in (root / FOLDER, root):
        if (candidate / "GTSRB" / "Training").is_dir():
            return candidate
    raise UserError(f"no GTSRB files under {root}: expected {root / FOLDER}/GTSRB/Training/<class>/*.ppm, "
                    f"GTSRB/Final_Test/Images/*.ppm and GT-final_test.csv (torchvision's GTSRB layout)")


def _train_files(base: Path):
    paths, labels = [], []
    for class_dir in sorted((base / "GTSRB" / "Training").iterdir()):
        if class_dir.is_dir() and class_dir.name.isdigit():
            files = sorted(class_dir.glob("*.ppm"))
            paths += files
            labels += [int(class_dir.name)] * len(files)
    if not paths:
        raise UserError(f"no .ppm images in {base / 'GTSRB' / 'Training'}; re-extract GTSRB")
    return paths, labels


def _test_files(base: Path):
    path = base / "GT-final_test.csv"
    if not path.is_file():
        raise UserError(f"{path} is missing; GTSRB's test labels come from GT-final_test.csv")
    folder = base / "GTSRB" / "Final_Test" / "Images"
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter=";", skipinitialspace=True))
        return [folder / row["Filename"] for row in rows], [int(row["ClassId"]) for row in rows]
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"cannot parse {path} ({exc}); the file looks corrupt, re-download it") from None


def load(data_path=None, seed: int = 0, download: bool = False) -> ImageDataset:
    if download:
        from torchvision.datasets import GTSRB

        root = Path(data_path or "data").expanduser()
        fetch("GTSRB", root, lambda: [GTSRB(str(root), split=split, download=True) for split in ("train", "test")],
              f"GTSRB's training and test archives into {FOLDER}/ and extract them")
        data_path = data_path or "data"
    base = _base(require_dir(data_path, "gtsrb", f"{FOLDER}/ in torchvision's GTSRB layout"))

    def build():
        tensors = {}
        for split, (paths, labels) in (("train", _train_files(base)), ("test", _test_files(base))):
            if any(not 0 <= label < NUM_CLASSES for label in labels):
                raise UserError(f"GTSRB {split} labels outside 0..42; the annotation files look corrupt")
            tensors[f"{split}_x"] = decode_image_files(paths, progress=f"decoding GTSRB {split}")
            tensors[f"{split}_y"] = torch.tensor(labels, dtype=torch.long)
        return tensors

    t = load_cached(base / CACHE_NAME, build)
    return ImageDataset("gtsrb", t["train_x"], t["train_y"], t["test_x"], t["test_y"],
                        num_classes=NUM_CLASSES, defaults=DEFAULTS,
                        class_names=[str(c) for c in range(NUM_CLASSES)])
