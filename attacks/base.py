"""What every attack is: a batched tensor function x (B,C,H,W) in [0,1] → triggered x′."""
from dataclasses import asdict, dataclass

import torch

from utils.params import check_params


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
    """

    name = "attack"
    display = ""                  # how reports name it ("WaNet" for warped); empty: its name
    reference_rates = None        # (poison, cover) fractions of the training set in the attack's reference code

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
        """The classes cover images are drawn from (None: every class)."""
        return None

    def params(self) -> dict:
        return asdict(self)

    def _on(self, key: str, tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A constant tensor on ``like``'s device and dtype, copied there once per device."""
        cache_key = (key, like.device, like.dtype)
        if cache_key not in self._device_cache:
            self._device_cache[cache_key] = tensor.to(like.device, like.dtype)
        return self._device_cache[cache_key]
