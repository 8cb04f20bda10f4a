"""Forward hooks that record a model's tap features for a latent regulariser (paper §3.3).

Every regulariser of the registry (regularizers/registry.py) reads the same taps, the model's
declared s1/s2/s3 modules, through this one recorder, so the methods differ only in what they do
with the features: a distance between two groups (MMD², a sliced Wasserstein distance) or a
discriminator's loss.
"""
from contextlib import contextmanager

import torch.nn as nn

from models import tap_modules


class TapRecorder:
    """Records the output of each tapped module on every forward pass until :meth:`clear`."""

    def __init__(self, model: nn.Module, levels):
        self.levels = tuple(levels)
        self.enabled = True
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

    def take(self) -> dict:
        """{level: features} of the last forward pass; raises if a level was not recorded."""
        missing = [level for level in self.levels if level not in self.features]
        if missing:
            raise RuntimeError(f"no features recorded at {missing}: run a forward pass first")
        return {level: self.features[level] for level in self.levels}

    def clear(self) -> None:
        self.features.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.features.clear()
