"""The poisoned training set C of Algorithm 1 and its batches (paper §2.2, §3.2).

A seeded, fixed subset U of non-target training images, |U| = round(r·|D|), is poisoned:
its copies carry the trigger and the target label. By default they are *added*
(C = D ∪ U, Algorithm 1); ``mode="replace"`` replaces the originals instead. An attack with a
noise mode (WaNet) also gets noise_per_poison·|U| noise samples from the other images, which
keep their true labels and are flagged ``noise``, not ``poisoned``.

Beyond the paper, for the attacks built since to be latent-inseparable: a source-specific attack
(TaCT) draws U from its source classes only; an attack with cover images gets a seeded subset V,
disjoint from U (and from its cover classes, if it names them), whose copies carry the training
trigger and keep their true labels (flagged ``cover``). Poisoned and cover images get the
attack's *training* trigger, which may differ from its test trigger.

At poisoning rates far below the paper's, a random batch rarely holds two poisoned images, so
Algorithm 1's MMD term would almost never act. ``batching="gather"`` (beyond the paper) keeps each
epoch's shuffled order but deals its poisoned images into a few batches, as many per batch as a
batch holds on average at the paper's 10%: every image is seen once per epoch as before, and the
term acts in those batches. ``"auto"`` (the default) gathers only when a random batch would hold
fewer than two poisoned images on average, so at the paper's rate the batches are Algorithm 1's.

Batches are assembled from uint8 tensors already on the training device: gather, random crop
and flip (batched), scale to [0,1], then the trigger on the poisoned rows (after augmentation,
as in the authors' code). Triggers are re-applied every epoch, so the trigger is never
augmented away.
"""
from dataclasses import dataclass, field, replace

import torch

from attacks.base import EVERY_OTHER, Attack
from datasets.augment import random_crop_flip
from utils.errors import ParameterError
from utils.seed import generator

CLEAN, POISONED, NOISE, COVER = 0, 1, 2, 3
MODES = ("add", "replace")
BATCHINGS = ("auto", "random", "gather")
PAPER_RATIO = 0.1  # the paper's poisoning rate: what a gathered batch holds, per image of the batch


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
    cover: torch.Tensor = None  # bool (B,), CPU: cover rows (the training trigger, the true label); None: none

    def benign_target_mask(self, target: int) -> torch.Tensor:
        """Clean rows (not poisoned, noise or cover) whose true class is the target: the MMD's
        benign group. A cover image carries the trigger, so it is not a benign representation."""
        mask = (self.source == target) & ~self.poisoned & ~self.noise
        return mask if self.cover is None else mask & ~self.cover

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


def choose_poisoned(labels: torch.Tensor, target: int, ratio: float, seed: int, sources=None) -> torch.Tensor:
    """Sorted indices of |U| = round(ratio·N) non-target images (of the ``sources`` classes only,
    when given), a seeded fixed choice."""
    allowed = labels != target
    if sources is not None:
        allowed &= torch.isin(labels, torch.as_tensor(list(sources)))
    candidates = allowed.nonzero().flatten()
    count = int(round(ratio * len(labels)))
    if count > len(candidates):
        where = "outside the target class" if sources is None else f"in the source classes {list(sources)}"
        raise ParameterError("poison_ratio", f"{ratio} asks for {count} poisoned images but only "
                             f"{len(candidates)} training images are {where}; lower it")
    if count < 1:
        raise ParameterError("poison_ratio", f"{ratio} poisons no image of {len(labels)}; raise it")
    order = torch.randperm(len(candidates), generator=generator(seed, "poison-subset"))
    return candidates[order[:count]].sort().values


def cover_classes(attack: Attack, labels: torch.Tensor, target: int):
    """The classes ``attack``'s cover images are drawn from, its ``cover_classes`` with
    ``EVERY_OTHER`` resolved against the classes of ``labels``: all but the source classes and
    ``target``."""
    if attack.cover_classes != EVERY_OTHER:
        return attack.cover_classes
    excluded = set(attack.source_classes or ()) | {int(target)}
    return tuple(int(c) for c in labels.unique().tolist() if int(c) not in excluded)


def choose_cover(labels: torch.Tensor, count: int, seed: int, taken: torch.Tensor, classes=None) -> torch.Tensor:
    """Sorted indices of ``count`` cover images: seeded, disjoint from ``taken`` (the poisoned and
    noise images), of the ``classes`` only when given."""
    allowed = torch.ones(len(labels), dtype=torch.bool)
    allowed[taken] = False
    if classes is not None:
        allowed &= torch.isin(labels, torch.as_tensor(list(classes)))
    candidates = allowed.nonzero().flatten()
    if count > len(candidates):
        where = "" if classes is None else f" of the cover classes {list(classes)}"
        raise ParameterError("cover_ratio", f"asks for {count} cover images but only {len(candidates)} training "
                             f"images{where} are left once the poisoned ones are taken; lower it")
    order = torch.randperm(len(candidates), generator=generator(seed, "cover-subset"))
    return candidates[order[:count]].sort().values


def gathered_batches(order: torch.Tensor, is_poisoned: torch.Tensor, batch_size: int, generator_) -> list:
    """``order`` (a shuffled epoch) cut into batches of ``batch_size`` whose poisoned positions
    (``is_poisoned`` over ``order``) are dealt into as few batches as the paper's rate fills: groups
    of round(batch_size·r/(1 + r)) (at least 2), in their shuffled order, each to a random full
    batch; the other positions keep their shuffled order. Every position appears exactly once."""
    poisoned, others = order[is_poisoned], order[~is_poisoned]
    count = len(order)
    sizes = [min(batch_size, count - start) for start in range(0, count, batch_size)]
    per_batch = max(2, int(round(batch_size * PAPER_RATIO / (1 + PAPER_RATIO))))
    full = [b for b, size in enumerate(sizes) if size >= min(per_batch, len(poisoned))]
    groups = max(1, -(-len(poisoned) // per_batch)) if len(poisoned) else 0
    groups = min(groups, len(full))
    chunks = torch.tensor_split(poisoned, groups) if groups else []
    slots = [full[i] for i in torch.randperm(len(full), generator=generator_)[:groups].tolist()]
    assigned = dict(zip(slots, chunks))
    batches, taken = [], 0
    for b, size in enumerate(sizes):
        chunk = assigned.get(b, poisoned[:0])
        fill = size - len(chunk)
        batches.append(torch.cat([chunk, others[taken:taken + fill]]))
        taken += fill
    return batches


class GroupTrigger:
    """A ``transform`` for the batched forward passes (inference.forward_batches) that plants the
    training trigger on images of one group taken in order: batch after batch, each row gets the
    trigger of its ``ordinal``, as it did in training."""

    def __init__(self, attack: Attack, group: str, ordinal: torch.Tensor, group_size: int):
        self.attack, self.group, self.ordinal, self.group_size = attack, group, ordinal, group_size
        self.offset = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.ordinal[self.offset:self.offset + len(x)]
        self.offset += len(x)
        return self.attack.train_trigger(x, self.group, rows, self.group_size)


class PoisonedData:
    """The training set C with per-sample flags, and a batch iterator on ``device``."""

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor, attack: Attack, target: int = 0,
                 poison_ratio: float = 0.1, mode: str = "add", seed: int = 0, device="cpu",
                 augment: bool = True, cover_ratio: float = None, batching: str = "auto", batch_size: int = None):
        """``cover_ratio``: cover images over the training-set size (None: the attack's own
        ``cover_per_poison`` × |U|). ``batching`` and ``batch_size``: see the module's docstring;
        "auto" needs the batch size to tell whether a random batch would hold two poisoned images."""
        if mode not in MODES:
            raise ParameterError("poison_mode", f"must be one of {', '.join(MODES)}, got '{mode}'")
        if batching not in BATCHINGS:
            raise ParameterError("poison_batching", f"must be one of {', '.join(BATCHINGS)}, got '{batching}'")
        self.attack, self.target, self.seed, self.augment = attack, target, seed, augment
        self.device = torch.device(device)
        self.labels = train_y.cpu().long()
        self.poison_index = choose_poisoned(self.labels, target, poison_ratio, seed, attack.source_classes)
        self.noise_index = self._choose_noise(round(attack.noise_per_poison * len(self.poison_index)))
        size = len(self.labels)
        covers = (round(attack.cover_per_poison * len(self.poison_index)) if cover_ratio is None
                  else int(round(cover_ratio * size)))
        self.cover_index = (choose_cover(self.labels, covers, seed, torch.cat([self.poison_index, self.noise_index]),
                                         cover_classes(attack, self.labels, target))
                            if covers else torch.empty(0, dtype=torch.long))
        groups = ((self.poison_index, POISONED), (self.noise_index, NOISE), (self.cover_index, COVER))
        if mode == "add":
            self.base_index = torch.cat([torch.arange(size)] + [index for index, _ in groups])
            self.kind = torch.cat([torch.full((size,), CLEAN, dtype=torch.int8)]
                                  + [torch.full((len(index),), kind, dtype=torch.int8) for index, kind in groups])
        else:
            self.base_index = torch.arange(size)
            self.kind = torch.full((size,), CLEAN, dtype=torch.int8)
            for index, kind in groups:
                self.kind[index] = kind
        # each poisoned or cover row's place in its group, which an attack may key its training trigger on
        self.ordinal = torch.zeros(len(self.base_index), dtype=torch.long)
        for index, kind in ((self.poison_index, POISONED), (self.cover_index, COVER)):
            rows = (self.kind == kind).nonzero().flatten()  # in index order in either mode
            self.ordinal[rows] = torch.arange(len(rows))
        self.gather = batching == "gather" or (batching == "auto" and batch_size is not None
                                               and len(self.poison_index) * batch_size < 2 * len(self.base_index))
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
        if self.gather:
            batches = gathered_batches(order, self.kind[order] == POISONED, batch_size,
                                       generator(self.seed, f"epoch-{epoch}-gather"))
        else:
            batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        for positions in batches:
            batch = self.make_batch(positions)
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
        ordinal = self.ordinal[positions]
        x = self._apply(x, poisoned, lambda rows: self.attack.train_trigger(
            rows, "poisoned", ordinal[poisoned], len(self.poison_index)))
        x = self._apply(x, noise, lambda rows: self.attack.noise(rows, self._noise_generator))
        cover = kind == COVER
        x = self._apply(x, cover, lambda rows: self.attack.train_trigger(
            rows, "cover", ordinal[cover], len(self.cover_index)))
        y = torch.where(poisoned, torch.full_like(source, self.target), source)
        return Batch(x, y.to(self.device, non_blocking=True), poisoned, source, noise,
                     cover=cover if len(self.cover_index) else None)

    def _apply(self, x: torch.Tensor, mask: torch.Tensor, transform) -> torch.Tensor:
        if not bool(mask.any()):
            return x
        rows = mask.nonzero().flatten().to(x.device, non_blocking=True)
        return x.index_copy(0, rows, transform(x.index_select(0, rows)))
