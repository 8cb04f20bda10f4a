"""Dataset registry: ``datasets.build(name, data_path=None, seed=0, download=False)``.

Each loader decodes once into uint8 tensors (N,3,32,32) kept in memory (see ``base.ImageDataset``).
"""
from datasets import celeba, cifar10, digits, fmnist, gtsrb
from datasets.base import DownloadFailed, ImageDataset, TrainDefaults
from utils.errors import unknown_name

REGISTRY = {"digits": digits, "fmnist": fmnist, "cifar10": cifar10, "celeba": celeba, "gtsrb": gtsrb}
NAMES = tuple(REGISTRY)
DOWNLOADABLE = ("cifar10", "celeba", "gtsrb")  # what --download fetches with torchvision (the others ignore it)


def defaults(name: str) -> TrainDefaults:
    """The per-dataset training schedule, without loading any data."""
    if name not in REGISTRY:
        raise unknown_name("dataset", name, REGISTRY)
    return REGISTRY[name].DEFAULTS


def build(name: str, data_path=None, seed: int = 0, download: bool = False) -> ImageDataset:
    if name not in REGISTRY:
        raise unknown_name("dataset", name, REGISTRY)
    return REGISTRY[name].load(data_path=data_path, seed=seed, download=download)


__all__ = ["build", "defaults", "DownloadFailed", "ImageDataset", "TrainDefaults", "NAMES", "DOWNLOADABLE"]
