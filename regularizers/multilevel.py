"""The multi-level regularisers of Algorithm 1 / Eq. 6: a distance at each level between the
clean target-class and the poisoned features (ML-MMDR; SL-MMDR with one level), and the base
every latent regulariser of regularizers/registry.py shares."""
import torch
import torch.nn as nn

from regularizers.taps import TapRecorder
from regularizers.kernels import get_kernel
from regularizers.mmd import ESTIMATORS, pooled_mmd2
from utils.distributed import SINGLE, Context
from utils.errors import UserError

REDUCTIONS = ("mean", "sum")


class LatentRegularizer:
    """What the training loop needs of a latent regulariser (regularizers/registry.py).

    A regulariser records the features of the model's taps on each training forward pass and
    turns them into one loss term, weighted by λ in Lt = L1 + L2 + λ·L3 (Algorithm 1). Its
    groups are the clean rows :meth:`benign_mask` picks (by default the clean target-class rows,
    Eq. 6's) and the poisoned rows. ``start_epoch`` runs before each epoch (a discriminator trains
    there); ``state_dict`` holds what a resumed run needs beyond the model. ``supports_ddp``:
    whether the loss under torchrun is exactly the one-process loss on the global batch."""

    name = ""
    display = ""
    term = ""  # prefix of the per-level values in history.csv (mmd_s1, …)
    supports_ddp = False

    def __init__(self, model: nn.Module, levels=("s1", "s2", "s3"), reduce: str = "mean"):
        if reduce not in REDUCTIONS:
            raise UserError(f"unknown level reduction '{reduce}'; choose one of {', '.join(REDUCTIONS)}")
        self.reduce = reduce
        self.taps = TapRecorder(model, levels)
        self.levels = self.taps.levels
        self.last_active = False  # whether the last loss() acted (both groups large enough)

    def benign_mask(self, batch, target: int) -> torch.Tensor:
        return batch.benign_target_mask(target)

    def reduced(self, per_level: dict) -> torch.Tensor:
        """The levels' values combined by the mean (paper Eq. 6) or the sum (prototype)."""
        stacked = torch.stack(list(per_level.values()))
        return stacked.mean() if self.reduce == "mean" else stacked.sum()

    def start_epoch(self, trainer, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) of ``trainer``: nothing, unless the method alternates."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @property
    def features(self) -> dict:
        return self.taps.features

    def paused(self):
        """Forward passes inside this block (evaluation) record nothing."""
        return self.taps.paused()

    def remove(self) -> None:
        self.taps.remove()


class PooledDistance(LatentRegularizer):
    """A distance between the two groups at each level, reduced over levels by the mean (paper
    Eq. 6) or the sum (prototype): ML-MMDR's form, for any distance :meth:`distance` defines.

    ``loss(benign_target_mask, poisoned_mask)`` is, per level, the distance between the features
    of the clean samples whose true class is the target and those of the poisoned samples of the
    same forward pass. A group with fewer than 2 samples makes every level contribute zero. The
    stored features are always released, whatever happens, so a skipped or failed step never leaks
    into the next. Under torchrun the groups' rows are gathered from every rank
    (:func:`gather_used_rows`), so the loss is the global batch's, exactly.

    Masks may live on the CPU (the training loop passes them so, which avoids a device sync
    to count the groups) or on the features' device.
    """

    supports_ddp = True

    def distance(self, pooled: torch.Tensor, n: int, level: str) -> torch.Tensor:
        """The distance between rows [:n] and rows [n:] of one level's pooled features."""
        raise NotImplementedError

    def loss(self, benign_target_mask: torch.Tensor, poisoned_mask: torch.Tensor, context: Context = SINGLE):
        """(reduced loss, {level: distance}) for the last forward pass; releases its features.

        Under DDP (an active ``context``, ``--mmd_sync global``) the masks describe the global
        batch and the recorded features are this rank's shard of it (:meth:`Context.shard`); the
        loss is then the global batch's, on the rows :func:`gather_used_rows` brings together."""
        try:
            features = self.taps.take()
            poisoned_mask = torch.as_tensor(poisoned_mask)
            benign = torch.as_tensor(benign_target_mask).nonzero().flatten()
            poisoned = poisoned_mask.nonzero().flatten()
            self.last_active = len(benign) >= 2 and len(poisoned) >= 2
            if not self.last_active:
                per_level = {level: feats.new_zeros((), dtype=torch.float32) for level, feats in features.items()}
            else:
                rows = torch.cat([benign, poisoned])
                if context.active:
                    pooled = gather_used_rows(features, rows, len(poisoned_mask), context)
                else:
                    pooled = {level: feats.index_select(0, rows.to(feats.device, non_blocking=True))
                              for level, feats in features.items()}
                per_level = {level: self.distance(pooled[level], len(benign), level) for level in self.levels}
            return self.reduced(per_level), per_level
        finally:
            self.taps.clear()


class MultiLevelMMD(PooledDistance):
    """The multi-level MMD regulariser of Algorithm 1 / Eq. 6: MMD² (Eq. 3) at each level (ML-MMDR
    at s1, s2, s3; SL-MMDR at s3 alone)."""

    name = "mmd"
    display = "MMD"
    term = "mmd"

    def __init__(self, model: nn.Module, levels=("s1", "s2", "s3"), kernel="gmk2",
                 reduce: str = "mean", estimator: str = "biased"):
        if estimator not in ESTIMATORS:
            raise UserError(f"unknown MMD estimator '{estimator}'; choose one of {', '.join(ESTIMATORS)}")
        super().__init__(model, levels, reduce)
        self.kernel = get_kernel(kernel)
        self.estimator = estimator

    def distance(self, pooled: torch.Tensor, n: int, level: str) -> torch.Tensor:
        return pooled_mmd2(pooled, n, self.kernel, self.estimator)


def shard_rows(rows: torch.Tensor, sizes: list) -> list:
    """Per rank, its rows among the global batch's ``rows`` (kept in their order), as indices into
    its contiguous shard of ``sizes[rank]`` rows (:meth:`Context.shard`)."""
    parts, start = [], 0
    for size in sizes:
        parts.append(rows[(rows >= start) & (rows < start + size)] - start)
        start += size
    return parts


def gather_used_rows(features: dict, rows: torch.Tensor, batch_size: int, context: Context) -> dict:
    """{level: the global batch's ``rows`` of that level's features, in the order of ``rows``,
    flattened}, where each rank recorded its shard of the ``batch_size`` rows: the pooled
    features of Eq. 6's MMD² terms (benign rows, then poisoned rows) on the global batch.

    Every rank knows the global masks (``Batch`` keeps them), so each sends only its own used
    rows (about a fifth of the batch at r = 0.1), not its whole shard, with no extra collective
    to agree on the counts. The gathered rows arrive in rank order and are then put in the order
    of ``rows``: the result is a copy of what indexing the whole gathered batch gives, and the
    backward sums each row's gradient over the ranks as that did, so loss and gradients are the
    same bit for bit on two ranks (tests/test_distributed.py); on more, up to the order in which
    the backward's reduce-scatter adds the ranks' terms, which NCCL may choose by the buffer's
    size (gloo adds them in rank order either way). The levels travel side by side as one buffer
    (each row's features at every level), so a step makes one all-gather, and one
    reduce-scatter in backward, instead of one of each per level; levels of different dtypes
    (autocast may leave some in bf16) travel in one buffer per dtype, since casting one level
    to another's dtype would round its gradient's sum differently.
    """
    sizes = context.shard_sizes(batch_size)
    sent = shard_rows(rows, sizes)
    counts, starts = [len(part) for part in sent], [sum(sizes[:rank]) for rank in range(len(sizes))]
    arrived = torch.cat([part + start for part, start in zip(sent, starts)])  # the global row of each gathered row
    position = torch.empty(batch_size, dtype=torch.long)
    position[arrived] = torch.arange(len(arrived))
    order, mine = position[rows], sent[context.rank]  # order: where each of ``rows`` arrives
    by_dtype = {}
    for level, feats in features.items():
        by_dtype.setdefault(feats.dtype, []).append(level)
    pooled = {}
    for levels in by_dtype.values():
        device = features[levels[0]].device
        local = torch.cat([features[level].index_select(0, mine.to(device, non_blocking=True)).flatten(1)
                           for level in levels], dim=1)
        gathered = context.gather_rows(local, counts)
        start, order_here = 0, order.to(device, non_blocking=True)
        for level in levels:
            width = features[level][0].numel()
            pooled[level] = gathered[:, start:start + width].index_select(0, order_here)
            start += width
    return pooled


def gather_traffic(row_bytes: int, benign_mask: torch.Tensor, poisoned_mask: torch.Tensor,
                   world_size: int) -> dict:
    """Bytes one rank receives in one step's global-MMD all-gather, {"all_rows", "used_rows"}:
    when every rank sends its whole shard (as before :func:`gather_used_rows`) and when it sends
    the rows the MMD uses. ``row_bytes`` is one sample's features at every level. An all-gather
    pads every rank's part to the largest, so a rank receives (K − 1)·max_r part_r rows; the
    backward's reduce-scatter sends as many bytes back. Zero when a group has fewer than 2 rows
    (nothing is gathered)."""
    benign, poisoned = benign_mask.nonzero().flatten(), poisoned_mask.nonzero().flatten()
    if len(benign) < 2 or len(poisoned) < 2:
        return {"all_rows": 0, "used_rows": 0}
    sizes = Context(0, world_size).shard_sizes(len(poisoned_mask))
    used = [len(part) for part in shard_rows(torch.cat([benign, poisoned]), sizes)]
    return {"all_rows": (world_size - 1) * max(sizes) * row_bytes,
            "used_rows": (world_size - 1) * max(used) * row_bytes}
