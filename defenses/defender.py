"""The erasing defender's clean data: a training share and a validation set, drawn apart from the
attacker's.

The NAD and ARGD code give the defender ``ratio = 0.05`` of CIFAR-10's training set (2,500 clean
images) through an unseeded ``random_split``: 5% of the data the backdoored model was trained on.
Our attacker trains on a seeded subset of the training set (``--train_subset``), so the defender's
share is 5% of the *attacker's* training-set size (``share_of = "attacker"``, the default: 500
images for a 10,000-image subset), drawn from the images outside that subset: clean images the
attacker never saw, as a defender who collects its own data would hold. ``share_of = "whole"``
takes the ratio of the dataset's whole training set instead (3,000 of Fashion-MNIST's 60,000, 30%
of a 10,000-image attacker): the earlier regime, kept as a sensitivity arm; the record says which.
The count is ⌊ratio × size⌋ computed exactly (the ratio read as the decimal it is written as), at
least one. A disjoint validation set (1,000 images by default) is drawn from the same pool; it is
the only data the defender's choices (the tuning rule of defenses/erasing/tuning.py) may look at,
so no setting is chosen on the test set that BA and ASR are read from.

When no images lie outside the attacker's training set (no ``--train_subset``, or too small a
remainder) both are drawn from clean copies of the attacker's training images, as in the reference
code, and the record says so. Neither ever holds a triggered image.
"""
import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from utils.errors import UserError
from utils.seed import generator

OUTSIDE = "outside the attacker's training subset"
INSIDE = "clean copies of the attacker's training images, none lying outside them"
SHARE_OF = ("attacker", "whole")  # what --defense_ratio is a share of: the attacker's training set, or the whole one


@dataclass
class DefenderData:
    images: torch.Tensor           # uint8 (N,3,32,32): the defender's training share
    labels: torch.Tensor
    validation_images: torch.Tensor
    validation_labels: torch.Tensor
    source: str                    # OUTSIDE or INSIDE
    full_training_set: int         # the dataset's whole training set (the attacker's and the images outside it)
    share_of: str = "attacker"     # SHARE_OF: what the ratio is a share of
    share_base: int = None         # … and its size (the attacker's training set, or full_training_set)

    def record(self) -> dict:
        """What a result records about the data: sizes, where it came from and a digest of the
        images, so two runs can be seen to have used the same sample."""
        digest = hashlib.sha256()
        for tensor in (self.images, self.labels, self.validation_images, self.validation_labels):
            digest.update(tensor.contiguous().numpy().tobytes())
        return {"images": len(self.images), "validation_images": len(self.validation_images), "source": self.source,
                "share_of": self.share_of, "share_base": self.share_base, "full_training_set": self.full_training_set,
                "sha256": digest.hexdigest()[:16]}


def exact_floor(fraction: float, count: int) -> int:
    """⌊``fraction`` × ``count``⌋, exact: the fraction is read as the decimal it prints as, so 0.29
    of 100 is 29, where the float product 28.999… would give 28."""
    return math.floor(Fraction(repr(float(fraction))) * count)


def share_count(ratio: float, size: int) -> int:
    """:func:`exact_floor` (``ratio``, ``size``), at least 1: the defender's share."""
    return max(1, exact_floor(ratio, size))


def share_record(ratio: float, defender: dict) -> dict:
    """What a tuning's or an erasing's record says of the defender's share, from its ``ratio`` and
    :meth:`DefenderData.record`: the ratio, what it is a share of, that set's size and the images."""
    return {"ratio": ratio, "of": defender.get("share_of"), "of_images": defender.get("share_base"),
            "images": defender.get("images")}


def defender_split(train_x: torch.Tensor, train_y: torch.Tensor, outside_x, outside_y, ratio: float,
                   validation_size: int, seed: int, share_of: str = "attacker") -> DefenderData:
    """:func:`share_count` (ratio, the attacker's training-set size ``len(train_x)``; with
    ``share_of="whole"`` the whole training set's) images and then up to ``validation_size``
    validation images, both from one seeded permutation of the pool (the images outside the
    attacker's subset when they hold the training share and at least one validation image, else
    the attacker's training set), each in pool order."""
    if share_of not in SHARE_OF:
        raise ValueError(f"share_of must be one of {', '.join(SHARE_OF)}, got {share_of!r}")
    outside = 0 if outside_x is None else len(outside_x)
    full = len(train_x) + outside
    base = len(train_x) if share_of == "attacker" else full
    count = share_count(ratio, base)
    if outside >= count + 1:
        pool_x, pool_y, source = outside_x, outside_y, OUTSIDE
    else:
        pool_x, pool_y, source = train_x, train_y, INSIDE
    if count >= len(pool_x):
        raise UserError(f"the defender's share ({count} images, --defense_ratio {ratio:g} of {base}) leaves no "
                        f"validation image in the {len(pool_x)} available; lower --defense_ratio")
    order = torch.randperm(len(pool_x), generator=generator(seed, "defender-data"))
    share = order[:count].sort().values
    validation = order[count:count + validation_size].sort().values
    return DefenderData(pool_x[share], pool_y[share], pool_x[validation], pool_y[validation], source, full,
                        share_of, base)


@dataclass
class DetectorCleanSet:
    """The clean images a detector may read (STRIP's overlays and fit set, TED's defense set,
    IBD-PSC's probe set, BaDExpert's fine-tuning set, ASSET's base set): never the test images it
    is scored on, and never a triggered image."""

    images: torch.Tensor           # uint8, the dataset's layout
    labels: torch.Tensor
    source: str                    # OUTSIDE or INSIDE

    def record(self) -> dict:
        return {"images": len(self.images), "source": self.source}


def detector_clean_set(train_x: torch.Tensor, train_y: torch.Tensor, outside_x, outside_y, count: int,
                       seed: int) -> DetectorCleanSet:
    """``count`` clean images for the detectors, a seeded uniform draw from the defender's pool:
    the images outside the attacker's training subset when they hold ``count`` (a defender's own
    data), else clean copies of the attacker's training images (as the detectors' reference code
    takes its clean set from the training data), which the record says. Fewer when fewer exist."""
    if outside_x is not None and len(outside_x) >= count:
        pool_x, pool_y, source = outside_x, torch.as_tensor(outside_y), OUTSIDE
    else:
        pool_x, pool_y, source = train_x, torch.as_tensor(train_y), INSIDE
    index = torch.randperm(len(pool_y), generator=generator(seed, "detector-held-out"))[:count]
    return DetectorCleanSet(pool_x[index], pool_y[index], source)
