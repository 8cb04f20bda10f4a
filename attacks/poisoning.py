"""The poisoned training set C of Algorithm 1 and its batches (paper §2.2, §3.2).

A seeded, fixed subset U of non-target training images, |U| = round(r·|D|), is poisoned:
its copies carry the trigger and the target label. By default they are *added*
(C = D ∪ U, Algorithm 1); ``mode="replace"`` replaces the originals instead. An attack with a
noise mode (WaNet) also gets noise_per_poison·|U| noise samples from the other images, which
keep their true labels and are flagged ``noise``, not ``poisoned``.

Batches are assembled from uint8 tensors already on the training device: gather, random crop
and flip (batched), scale to [0,1], then the trigger on the poisoned rows (after augmentation,
as in the authors' code). Triggers are re-applied every epoch, so the trigger is never
augmented away.
"""
from dataclasses import dataclass, field, replace

import torch

from attacks.base import Attack
from datasets.augment import random_crop_flip
from utils.errors import ParameterError
from utils.seed import generator

CLEAN, POISONED, NOISE = 0, 1, 2
MODES = ("add", "replace")


@dataclass
class Batch:
    """One training batch. ``x`` and ``y`` live on the training device; the per-sample flags
    stay on the CPU, so group sizes are known without a device sync.

    Under DDP ``x`` and ``y`` are this rank's ``rows`` of the global batch while the flags stay
    those of the whole global batch, so every rank knows the global group sizes (Algorithm 1's
    |X1| and |X2|) and which gathered rows form the MMD's groups, without communicating."""

    x: torch.Tensor         # float (b,C,H,W) in [0,1], augmented, triggered where poisoned
    y: torch.Tensor         # training label: the target for poisoned rows, else the true label
    poisoned: torch.Tensor  # bool (B,), CPU
    source: torch.Tensor    # int64 (B,), CPU: the true label
    noise: torch.Tensor     # bool (B,), CPU: WaNet noise-mode rows
    rows: slice = field(default_factory=lambda: slice(None))  # this rank's rows of the global batch (all of them in one process)

    def benign_target_mask(self, target: int) -> torch.Tensor:
        """Clean (not poisoned, not noise) rows whose true class is the target: the MMD's benign group."""
        return (self.source == target) & ~self.poisoned & ~self.noise

    @property
    def size(self) -> int:
        """Rows in the global batch."""
        return len(self.poisoned)

    def shard(self, context) -> "Batch":
        """This rank's rows of the batch (the batch itself in one process)."""
        if not context.active:
            return self
        rows = context.shard(self.size)
        return replace(self, x=self.x[rows], y=self.y[rows], rows=rows)


def choose_poisoned(labels: torch.Tensor, target: int, ratio: float, seed: int) -> torch.Tensor:
    """Sorted indices of |U| = round(ratio·N) non-target images, a seeded fixed choice."""
    candidates = (labels != target).nonzero().flatten()
    count = int(round(ratio * len(labels)))
    if count > len(candidates):
        raise ParameterError("poison_ratio", f"{ratio} asks for {count} poisoned images but only "
                             f"{len(candidates)} training images are outside the target class; lower it")
    if count < 1:
        raise ParameterError("poison_ratio", f"{ratio} poisons no image of {len(labels)}; raise it")
    order = torch.randperm(len(candidates), generator=generator(seed, "poison-subset"))
    return candidates[order[:count]].sort().values


class PoisonedData:
    """The training set C with per-sample flags, and a batch iterator on ``device``."""

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor, attack: Attack, target: int = 0,
                 poison_ratio: float = 0.1, mode: str = "add", seed: int = 0, device="cpu",
                 augment: bool = True):
        if mode not in MODES:
            raise ParameterError("poison_mode", f"must be one of {', '.join(MODES)}, got '{mode}'")
        self.attack, self.target, self.seed, self.augment = attack, target, seed, augment
        self.device = torch.device(device)
        self.labels = train_y.cpu().long()
        self.poison_index = choose_poisoned(self.labels, target, poison_ratio, seed)
        self.noise_index = self._choose_noise(round(attack.noise_per_poison * len(self.poison_index)))
        size = len(self.labels)
        if mode == "add":
            self.base_index = torch.cat([torch.arange(size), self.poison_index, self.noise_index])
            self.kind = torch.cat([torch.full((size,), CLEAN, dtype=torch.int8),
                                   torch.full((len(self.poison_index),), POISONED, dtype=torch.int8),
                                   torch.full((len(self.noise_index),), NOISE, dtype=torch.int8)])
        else:
            self.base_index = torch.arange(size)
            self.kind = torch.full((size,), CLEAN, dtype=torch.int8)
            self.kind[self.poison_index] = POISONED
            self.kind[self.noise_index] = NOISE
        images = train_x.pin_memory() if self.device.type == "cuda" else train_x
        self.images = images.to(self.device, non_blocking=True)
        self._augment_generator = generator(seed, "augment", device=self.device)
        self._noise_generator = generator(seed, "attack-noise", device=self.device)

    def rng_state(self) -> dict:
        """The state of the generators that advance across epochs (augmentation, WaNet noise)."""
        return {"augment": self._augment_generator.get_state(), "noise": self._noise_generator.get_state()}

    def set_rng_state(self, state: dict) -> None:
        self._augment_generator.set_state(state["augment"])
        self._noise_generator.set_state(state["noise"])

    def _choose_noise(self, count: int) -> torch.Tensor:
        if count == 0:
            return torch.empty(0, dtype=torch.long)
        available = torch.ones(len(self.labels), dtype=torch.bool)
        available[self.poison_index] = False
        pool = available.nonzero().flatten()
        order = torch.randperm(len(pool), generator=generator(self.seed, "noise-subset"))
        return pool[order[: min(count, len(pool))]].sort().values

    def __len__(self) -> int:
        return len(self.base_index)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, epoch: int, context=None):
        """Shuffled batches of C for one epoch; the order is a function of (seed, epoch).
        ``batch_size`` is the global batch: under DDP each rank gets its shard of every batch
        (utils/distributed.py says why every rank assembles the whole batch first)."""
        order = torch.randperm(len(self), generator=generator(self.seed, f"epoch-{epoch}"))
        for start in range(0, len(order), batch_size):
            batch = self.make_batch(order[start:start + batch_size])
            yield batch if context is None else batch.shard(context)

    def make_batch(self, positions: torch.Tensor) -> Batch:
        base = self.base_index[positions]
        kind = self.kind[positions]
        poisoned, noise = kind == POISONED, kind == NOISE
        source = self.labels[base]
        images = self.images.index_select(0, base.to(self.device, non_blocking=True))
        if self.augment:
            images = random_crop_flip(images, self._augment_generator)
        x = images.float().div_(255.0)
        x = self._apply(x, poisoned, lambda rows: self.attack(rows))
        x = self._apply(x, noise, lambda rows: self.attack.noise(rows, self._noise_generator))
        y = torch.where(poisoned, torch.full_like(source, self.target), source)
        return Batch(x, y.to(self.device, non_blocking=True), poisoned, source, noise)

    def _apply(self, x: torch.Tensor, mask: torch.Tensor, transform) -> torch.Tensor:
        if not bool(mask.any()):
            return x
        rows = mask.nonzero().flatten().to(x.device, non_blocking=True)
        return x.index_copy(0, rows, transform(x.index_select(0, rows)))
