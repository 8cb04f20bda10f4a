"""TaCT, the source-specific attack of Tang et al. ("Demon in the Variant", USENIX Security 2021),
as the original authors' ``pysrc/train_cifar10.py`` and backdoor-toolbox's ``TaCT.py`` plant it.

Only images of the source classes are poisoned (stamped and relabelled to the target); cover
images of the cover classes are stamped and keep their labels, so the model learns that the
trigger means the target only on the source classes. The ASR is measured on the source classes'
test images alone; the rate at which the other classes' triggered images reach the target is
reported beside it. Defaults: source 1, cover images from every class that is neither a source nor
the target, the target is the run's ``--target`` (0 by default, as the reference's), rates 0.3%
and 0.3%.

The cover classes are Tang et al.'s: their ``_poison`` draws cover images from every class but the
source and the target when no cover labels are given, as in the runs their scripts name ``cn``.
backdoor-toolbox's port fixes them to 5 and 7 (``--tact_cover 5 7``). With covers from two classes
only, the trigger learns "target unless 5 or 7" and fires on the classes never covered (on digits
at 5%, about a third of those classes' triggered images reached the target), which is not a
source-specific backdoor; with every other class covered it fires on the source alone. The trigger is stamped at
full strength (x′ = x + m⊙(t − x)) in training and at test.
"""
from dataclasses import dataclass

import torch

from attacks import stamps
from attacks.base import EVERY_OTHER, Attack, Regime
from utils.params import param


@dataclass
class TaCT(Attack):
    tact_source: list = param([1], "source classes: only their images are poisoned, and the ASR is theirs "
                              "(reference: 1)", low=0, nargs="+")
    tact_cover: list = param([], "cover classes: their stamped images keep their labels (none given: every "
                             "class but the sources and the target, as Tang et al.'s code; backdoor-toolbox: 5 7)",
                             low=0, nargs="*", type=int)
    tact_cover_per_poison: float = param(1.0, "cover images per poisoned one (reference: 0.3% and 0.3%)", low=0.0)
    name = "tact"
    display = "TaCT"
    reference_rates = (0.003, 0.003)
    # Tang et al.'s own code (pysrc/train_cifar10.py ``_poison``) adds the stamped copies beside their
    # clean originals; the toolbox's port modifies them in place. Both train one softmax cross-entropy
    # over shuffled batches.
    published_regime = Regime("pooled", "random", "add", "Tang et al., pysrc/train_cifar10.py: stamped copies "
                              "added beside their originals, one cross-entropy over shuffled batches")

    def __post_init__(self):
        super().__post_init__()
        if set(self.tact_source) & set(self.tact_cover):
            from utils.errors import ParameterError

            raise ParameterError("tact_cover", f"{self.tact_cover} shares a class with --tact_source {self.tact_source}; "
                                               "a class is a source or a cover class, not both")
        self.stamp = stamps.tact_square()

    @property
    def cover_per_poison(self) -> float:
        return self.tact_cover_per_poison

    @property
    def source_classes(self):
        return tuple(self.tact_source)

    @property
    def cover_classes(self):
        return tuple(self.tact_cover) or EVERY_OTHER

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return stamps.plant(x, self.stamp, 1.0)
