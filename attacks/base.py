"""What every attack is: a batched tensor function x (B,C,H,W) in [0,1] → triggered x′, and the
training regime its authors published it with."""
from dataclasses import asdict, dataclass

import torch

from utils.params import check_params


@dataclass(frozen=True)
class Regime:
    """How a backdoored model is trained on an attack's data: the cross-entropy's reduction, how
    the poisoned images are batched and whether they are added beside their originals or replace
    them (``pipeline.config.RunConfig``'s ``ce_reduction``, ``poison_batching``, ``poison_mode``).
    ``source`` says where the choice comes from."""

    ce_reduction: str
    poison_batching: str
    poison_mode: str
    source: str

    def settings(self) -> dict:
        return {"ce_reduction": self.ce_reduction, "poison_batching": self.poison_batching,
                "poison_mode": self.poison_mode}


# The paper's Algorithm 1: L1 + L2 over the batch's benign and poisoned rows (lines 9-10), C = D ∪ U,
# shuffled batches (gathered only where a random batch would hold fewer than two poisoned images,
# so that the MMD term can act at all: pipeline/config.py's --poison_batching)
ALGORITHM_1 = Regime("split", "auto", "add", "the paper's Algorithm 1 (lines 9-10: L1 + L2; C = D ∪ U)")
# Qi et al.'s adaptive attacks as the backdoor toolbox trains them
TOOLBOX = Regime("pooled", "random", "replace", "backdoor-toolbox: train_on_poisoned_set.py trains on the poisoned "
                 "set (poisoned and cover images modified in place) with one nn.CrossEntropyLoss over shuffled batches")


# cover_classes: every class that is neither a source class nor the target (Tang et al.'s TaCT runs
# without cover labels)
EVERY_OTHER = "every other class"


@dataclass
class Attack:
    """Base class. Subclasses are dataclasses whose ``param`` fields (utils.params) are their
    parameters: the help text and domain written there become the command-line flag, the
    run-name part and the validation. A field ``seed`` (not a ``param``) receives the run's seed.

    ``noise_per_poison`` > 0 means the attack also trains on *noise* samples (WaNet's noise
    mode): that many extra samples per poisoned one, made by :meth:`noise`, keeping their
    true labels.

    The attacks built to be latent-inseparable (Qi et al., ICLR 2023; Tang et al., USENIX
    Security 2021) add three notions, each with a default that leaves the paper's attacks as
    they are:

    - ``__call__`` is the *test-time* trigger; :meth:`train_trigger` the one planted in training
      (by default the same);
    - ``cover_per_poison``: cover images per poisoned one, at the attack's reference rates (cover
      images carry the training trigger and keep their true label; 0: none);
    - ``source_classes``: the classes whose images are poisoned and on whose test images the ASR
      is measured (None: every class but the target).

    A field ``grayscale`` (not a ``param``) is set by ``attacks.build`` when the dataset's images
    are grey, so an attack that draws its own trigger draws it grey.

    ``published_regime`` is how the attack's authors trained with it (a :class:`Regime`): a run
    of the attack alone (RBT) trains so by default. The paper's attacks are trained as Algorithm 1
    trains them.
    """

    name = "attack"
    display = ""                  # how reports name it ("WaNet" for warped); empty: its name
    reference_rates = None        # (poison, cover) fractions of the training set in the attack's reference code
    published_regime = ALGORITHM_1

    def __post_init__(self):
        check_params(self)
        self._device_cache = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def noise_per_poison(self) -> float:
        return 0.0

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} has no noise mode")

    def train_trigger(self, x: torch.Tensor, group: str, ordinal: torch.Tensor, group_size: int) -> torch.Tensor:
        """The trigger planted in training on rows of ``group`` ("poisoned" or "cover"): ``ordinal``
        (len(x),) is each row's place in its group (its images in index order) and ``group_size`` the
        group's size, so an attack can give an image the same trigger every epoch (the reference
        attacks draw it once per image). Default: the test-time trigger."""
        return self(x)

    @property
    def cover_per_poison(self) -> float:
        return 0.0

    @property
    def source_classes(self):
        return None

    @property
    def cover_classes(self):
        """The classes cover images are drawn from (None: every class; ``EVERY_OTHER``: every class
        but the source classes and the target)."""
        return None

    def params(self) -> dict:
        return asdict(self)

    def _on(self, key: str, tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A constant tensor on ``like``'s device and dtype, copied there once per device."""
        cache_key = (key, like.device, like.dtype)
        if cache_key not in self._device_cache:
            self._device_cache[cache_key] = tensor.to(like.device, like.dtype)
        return self._device_cache[cache_key]
