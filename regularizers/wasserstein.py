"""The sliced Wasserstein distance of the Wasserstein Backdoor's latent term (Doan et al. [22]).

WB (NeurIPS 2021) matches the penultimate features of clean images and of their triggered copies
with a sliced Wasserstein distance: each feature vector is projected on a set of directions, each
projection's two sets of values are sorted and compared, and the distances are averaged over the
directions. Its public ports (no official code was released) project on the K rows of the last
linear layer and compare the sorted values with the mean absolute difference, i.e. W1 in one
dimension for two sets of equal size.

Here the two groups are Eq. 6's, the clean target-class and the poisoned features of a batch,
whose sizes differ, so the one-dimensional W1 is computed exactly for unequal sizes: the integral
over u ∈ (0, 1) of |F⁻¹(u) − G⁻¹(u)| between the two empirical quantile functions, which for equal
sizes is the ports' mean |sorted x − sorted y|.
"""
import torch

from regularizers.multilevel import PooledDistance
from utils.seed import generator


def wasserstein1_1d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """W1 between the empirical distributions of the columns of ``x`` (n, P) and ``y`` (m, P),
    one value per column: ∫₀¹ |F⁻¹(u) − G⁻¹(u)| du, exact for n ≠ m; differentiable in both."""
    n, m = len(x), len(y)
    x_sorted, y_sorted = x.sort(dim=0).values, y.sort(dim=0).values
    # the quantile functions are step functions that change at i/n and j/m: between two
    # consecutive breakpoints both are constant, so the integral is a finite weighted sum
    breaks = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                        torch.arange(1, m + 1, dtype=torch.float64) / m]).unique()
    lower = torch.cat([breaks.new_zeros(1), breaks[:-1]])
    widths, middle = breaks - lower, (breaks + lower) / 2
    x_rank = (middle * n).floor().long().clamp_max(n - 1).to(x.device)
    y_rank = (middle * m).floor().long().clamp_max(m - 1).to(x.device)
    gaps = (x_sorted.index_select(0, x_rank) - y_sorted.index_select(0, y_rank)).abs()
    return (gaps * widths.to(device=x.device, dtype=x.dtype)[:, None]).sum(0)


def sliced_wasserstein(pooled: torch.Tensor, n: int, directions: torch.Tensor) -> torch.Tensor:
    """The mean over ``directions`` (P, d) of W1 between rows [:n] and rows [n:] of ``pooled``
    (flattened to d features) projected on each direction. Computed in float32 even under autocast."""
    if n < 1 or len(pooled) - n < 1:
        raise ValueError(f"sliced_wasserstein needs at least 1 sample per group, got {n} and {len(pooled) - n}")
    with torch.autocast(device_type=pooled.device.type, enabled=False):
        pooled = pooled.flatten(1).to(torch.promote_types(pooled.dtype, torch.float32))
        projected = pooled @ directions.to(pooled.dtype).T
        return wasserstein1_1d(projected[:n], projected[n:]).mean()


def random_directions(count: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` directions drawn uniformly on the unit sphere of R^dim (normalised Gaussians)."""
    directions = torch.randn(count, dim, generator=generator)
    return directions / directions.norm(dim=1, keepdim=True)


class MultiLevelSWD(PooledDistance):
    """WB's latent term as a classifier regulariser on the project's fixed triggers, at every level
    of Eq. 6's form: the sliced W1 between the clean target-class and the poisoned features.

    This is *not* the Wasserstein Backdoor: there the term trains a trigger generator and the
    classifier sees only its two cross-entropies (docs/methods/reduction-methods.md). The directions
    are ``projections`` unit vectors drawn anew at every step and level from the run's seed, since
    a level other than the last has no classifier rows to project on (the ports' choice); the
    generator's state is in the checkpoint, so a resumed run draws what an uninterrupted one draws.
    """

    name = "wasserstein"
    display = "SWD"
    term = "swd"

    def __init__(self, model, levels=("s1", "s2", "s3"), reduce: str = "mean", projections: int = 10,
                 seed: int = 0):
        super().__init__(model, levels, reduce)
        self.projections = projections
        self.generator = generator(seed, "swd-directions")

    def distance(self, pooled: torch.Tensor, n: int, level: str) -> torch.Tensor:
        directions = random_directions(self.projections, pooled[0].numel(), self.generator)
        return sliced_wasserstein(pooled, n, directions.to(pooled.device, non_blocking=True))

    def state_dict(self) -> dict:
        return {"directions_rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["directions_rng"])
