"""The multi-level MMD regulariser of Algorithm 1 / Eq. 6 (ML-MMDR; SL-MMDR with one level)."""
from contextlib import contextmanager

import torch
import torch.nn as nn

from models import tap_modules
from regularizers.kernels import get_kernel
from regularizers.mmd import ESTIMATORS, pooled_mmd2
from utils.errors import UserError

REDUCTIONS = ("mean", "sum")


class MultiLevelMMD:
    """Forward hooks on the model's named taps; ``loss`` after each forward pass.

    ``loss(benign_target_mask, poisoned_mask)`` is, per level, MMD² between the features of
    the clean samples whose true class is the target and those of the poisoned samples of the
    same forward pass, reduced over levels by the mean (paper Eq. 6) or the sum (prototype).
    A group with fewer than 2 samples makes every level contribute zero. The stored features
    are always released, whatever happens, so a skipped or failed step never leaks into the next.

    Masks may live on the CPU (the training loop passes them so, which avoids a device sync
    to count the groups) or on the features' device.
    """

    def __init__(self, model: nn.Module, levels=("s1", "s2", "s3"), kernel="gmk2",
                 reduce: str = "mean", estimator: str = "biased"):
        if reduce not in REDUCTIONS:
            raise UserError(f"unknown level reduction '{reduce}'; choose one of {', '.join(REDUCTIONS)}")
        if estimator not in ESTIMATORS:
            raise UserError(f"unknown MMD estimator '{estimator}'; choose one of {', '.join(ESTIMATORS)}")
        self.levels = tuple(levels)
        self.kernel = get_kernel(kernel)
        self.reduce = reduce
        self.estimator = estimator
        self.enabled = True
        self.last_active = False  # whether the last loss() had both groups (≥ 2 samples each)
        self.features = {}
        self._handles = [module.register_forward_hook(self._recorder(level))
                         for level, module in tap_modules(model, self.levels).items()]

    def _recorder(self, level: str):
        def record(module, inputs, output):
            if self.enabled:
                self.features[level] = output
        return record

    @contextmanager
    def paused(self):
        """Forward passes inside this block (evaluation) record nothing."""
        previous, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = previous

    def loss(self, benign_target_mask: torch.Tensor, poisoned_mask: torch.Tensor, gather=None):
        """(reduced loss, {level: MMD²}) for the last forward pass; releases its features.

        ``gather(features) -> features`` turns one DDP rank's recorded rows into the global
        batch's (an autograd-aware all-gather); the masks then describe the global batch."""
        try:
            missing = [level for level in self.levels if level not in self.features]
            if missing:
                raise RuntimeError(f"no features recorded at {missing}: run a forward pass first")
            benign = torch.as_tensor(benign_target_mask).nonzero().flatten()
            poisoned = torch.as_tensor(poisoned_mask).nonzero().flatten()
            rows = torch.cat([benign, poisoned])
            self.last_active = len(benign) >= 2 and len(poisoned) >= 2
            per_level = {}
            for level in self.levels:
                feats = self.features[level]
                if len(benign) < 2 or len(poisoned) < 2:
                    per_level[level] = feats.new_zeros((), dtype=torch.float32)
                    continue
                if gather is not None:
                    feats = gather(feats)
                pooled = feats.index_select(0, rows.to(feats.device, non_blocking=True))
                per_level[level] = pooled_mmd2(pooled, len(benign), self.kernel, self.estimator)
            stacked = torch.stack(list(per_level.values()))
            return (stacked.mean() if self.reduce == "mean" else stacked.sum()), per_level
        finally:
            self.features.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.features.clear()
