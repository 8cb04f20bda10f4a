"""The in-memory dataset every loader returns, and helpers the loaders share."""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from utils.errors import ParameterError, UserError
from utils.io import first_missing, remove_path, save_torch

IMAGE_SIZE = 32


@dataclass(frozen=True)
class TrainDefaults:
    """Per-dataset schedule; main.py uses these unless a flag overrides them.

    Paper §3.4: "the total training duration is 100 epochs for CIFAR-10 and 40 epochs for
    CelebA. The initial learning rate is set to 0.01 and it is dropped by 10 after 50 and 70
    epochs for CIFAR-10 and 20 and 30 epochs for CelebA." The milestones are kept as fractions
    of the epochs (CIFAR-10 0.5, 0.7; CelebA 0.5, 0.75) so that a shorter run (12 epochs)
    decays at the same points of its schedule; explicit milestones still win.
    """

    epochs: int
    milestone_fractions: tuple
    batch_size: int = 256
    lr: float = 0.01

    def milestones(self, epochs: int) -> list:
        """The decay epochs for a run of ``epochs`` epochs: each fraction × epochs, rounded half
        up, kept in 1..epochs−1 (a later one would never apply), without repeats."""
        points = (int(fraction * epochs + 0.5) for fraction in self.milestone_fractions)
        return sorted({point for point in points if 1 <= point < epochs})


@dataclass
class ImageDataset:
    """Decoded once: uint8 images (N,3,32,32) and int64 labels, kept in memory."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    defaults: TrainDefaults
    class_names: list = field(default_factory=list)
    # the training images a --train_subset run leaves out: what the erasing defender draws from
    outside_x: torch.Tensor = None
    outside_y: torch.Tensor = None

    def __post_init__(self):
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
                raise ValueError(f"{self.name} {split} images must be uint8 (N,3,32,32), got "
                                 f"{tuple(x.shape)} {x.dtype}")
            if len(x) != len(y):
                raise ValueError(f"{self.name} {split}: {len(x)} images but {len(y)} labels")

    @property
    def grayscale(self) -> bool:
        """Whether every training image is grey (its three channels equal): digits and Fashion-MNIST
        are stored as RGB copies of one channel. An attack that draws its own trigger draws it grey
        there, so colour is no cue."""
        x = self.train_x
        return bool(torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2]))


def require_dir(data_path, dataset: str, expected: str, downloadable: bool = True) -> Path:
    """The dataset root, or a clear error saying which flag to set and what it must hold, and, for a
    dataset torchvision can fetch, that --download would."""
    fetch = "; or add --download to let torchvision fetch it into --data_path (default ./data)" if downloadable else ""
    if data_path is None:
        raise ParameterError("data_path", f"is required for {dataset}: point it at the directory that "
                             f"holds {expected}{fetch}")
    root = Path(data_path).expanduser()
    if not root.is_dir():
        raise ParameterError("data_path", f"{root} does not exist; point it at the directory that holds "
                             f"{expected}{fetch}")
    return root


class DownloadFailed(UserError):
    """A ``--download`` that did not complete (no network, a refused or cut connection, a corrupt
    archive); what it had written is already removed."""


def _reason(error: BaseException) -> str:
    """Why a download failed, in a few words: a host that cannot be resolved (offline, or no DNS), a
    refused connection, an HTTP status, torchvision's own complaint."""
    import socket
    import urllib.error

    if isinstance(error, urllib.error.HTTPError):
        return str(error)
    cause = getattr(error, "reason", None) if isinstance(error, urllib.error.URLError) else None
    cause = cause if cause is not None else error
    what = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the server's name: {what}"
    return what


def download(dataset: str, root, fetch, files: str) -> None:
    """Run ``fetch()``, torchvision's download of ``dataset`` into the folder ``root``. If it fails or
    is interrupted, what it wrote is removed first: ``root`` itself and the parents it created when
    they were not there, else what appeared in ``root`` and in the folders directly under it (a
    partial archive, a half-extracted folder). A failure then raises :class:`DownloadFailed`: the
    download failed and why, and how to go on without a network here (``files`` names what to fetch)."""
    root = Path(root).expanduser()
    created = first_missing(root)
    before = set() if created else _entries(root)
    try:
        fetch()
    except BaseException as error:
        if created is not None:
            remove_path(created)
        else:
            for path in sorted(_entries(root) - before, key=lambda p: len(p.parts)):
                remove_path(path)
        if not isinstance(error, Exception):  # Ctrl-C, SIGTERM: cleaned up, and passed on as they are
            raise
        raise DownloadFailed(f"downloading {dataset} into {root} failed ({_reason(error)}); on a machine with "
                             f"internet access run this command (or fetch {files}), copy --data_path's folder to "
                             f"this machine and give it as --data_path, without --download") from None


def _entries(root: Path) -> set:
    """What ``root`` holds, and what its folders hold (not deeper: an extracted dataset holds many files)."""
    if not root.is_dir():
        return set()
    found = set(root.iterdir())
    return found | {path for folder in found if folder.is_dir() and not folder.is_symlink()
                    for path in folder.iterdir()}


def hwc_to_chw_uint8(images: np.ndarray) -> torch.Tensor:
    """(N,H,W,C) or (N,H,W) uint8 array → (N,3,H,W) uint8 tensor (grey is repeated)."""
    tensor = torch.from_numpy(np.array(images, dtype=np.uint8))  # a copy: IDX buffers are read-only
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(-1)
    tensor = tensor.permute(0, 3, 1, 2)
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return tensor.contiguous()


CACHE_KEYS = ("train_x", "train_y", "test_x", "test_y")


def load_cached(cache_path: Path, build):
    """Decode once and cache the tensors next to the data, since JPEG/PPM decoding is slow.

    ``build()`` returns a dict of tensors (``train_x``, ``train_y``, ``test_x``, ``test_y``); the
    cache is rebuilt if it is unreadable or lacks one of them.
    """
    if cache_path.is_file():
        try:
            cached = torch.load(cache_path, map_location="cpu", weights_only=True)
            if isinstance(cached, dict) and all(isinstance(cached.get(key), torch.Tensor) for key in CACHE_KEYS):
                return cached
        except Exception:
            pass  # a stale or truncated cache is rebuilt below
    tensors = build()
    try:
        save_torch(tensors, cache_path)
    except OSError:
        pass  # a read-only data directory only costs the decode next time
    return tensors


def decode_image_files(paths, size: int = IMAGE_SIZE, box_for=None, progress: str = "") -> torch.Tensor:
    """Decode image files with PIL, optionally crop a box, resize to size×size RGB uint8."""
    from PIL import Image
    from tqdm import tqdm

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, path in enumerate(tqdm(paths, desc=progress or "decoding", leave=False, disable=len(paths) < 1000)):
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if box_for is not None:
                    img = img.crop(box_for(path))
                img = img.resize((size, size), Image.BILINEAR)
                out[i] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot decode image {path} ({exc}); the dataset files look corrupt, "
                            f"re-extract them") from None
    return out


def stratified_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded subset of ``size`` samples with the class proportions kept."""
    from sklearn.model_selection import train_test_split

    if size >= len(labels):
        return torch.arange(len(labels))
    index, _ = train_test_split(np.arange(len(labels)), train_size=size, stratify=labels.numpy(),
                                random_state=seed % (2**32))
    return torch.from_numpy(np.sort(index))
