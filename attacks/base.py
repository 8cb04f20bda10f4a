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
    """

    name = "attack"

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

    def params(self) -> dict:
        return asdict(self)

    def _on(self, key: str, tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A constant tensor on ``like``'s device and dtype, copied there once per device."""
        cache_key = (key, like.device, like.dtype)
        if cache_key not in self._device_cache:
            self._device_cache[cache_key] = tensor.to(like.device, like.dtype)
        return self._device_cache[cache_key]
