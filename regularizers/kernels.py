"""Kernels of the paper's TABLE 3, by name, as functions of the pooled Gram matrix.

Each kernel maps the Gram matrix G = Z·Zᵀ of the pooled (centred) samples Z to the kernel
matrix K, so nothing larger than N×N is ever built (the prototype's n×n×d tensor is avoided).

The Gaussian family is exp(−‖a−b‖² / (σ·β)) with the adaptive bandwidth
β = mean off-diagonal pooled squared distance, computed without gradient (prototype code).
A mixture kernel sums the Gaussians over its multipliers σ. GMK2, σ ∈ {¼, ½, 1, 2, 4}, is
exactly the prototype's kernel (``kernel_mul=2, kernel_num=5``) and the default.

TABLE 3's exact parameters for the other entries are this project's reading of the paper
(single bandwidths for GK1–3, mixtures of different spread and size for GMK1–6, the linear
kernel for LK); ``KERNELS`` lists them so every run records what it used.
"""
from dataclasses import dataclass

import torch

from utils.errors import unknown_name


def _geometric(multiplier: float, count: int) -> tuple:
    """Multipliers centred on 1 like the prototype: β/mul^(count//2) · mul^i, i < count."""
    return tuple(float(multiplier) ** (i - count // 2) for i in range(count))


@dataclass(frozen=True)
class Kernel:
    name: str
    kind: str  # "gaussian" or "linear"
    sigmas: tuple = ()

    def __call__(self, gram: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return gram
        squared = pairwise_sq_distances(gram)
        count = len(squared)
        beta = squared.detach().sum() / max(count * count - count, 1)
        beta = beta.clamp_min(torch.finfo(squared.dtype).tiny)  # identical samples: every distance 0
        return sum(torch.exp(-squared / (sigma * beta)) for sigma in self.sigmas)


def pairwise_sq_distances(gram: torch.Tensor) -> torch.Tensor:
    """‖z_i − z_j‖² from the Gram matrix, clamped at 0, with an exact zero diagonal."""
    norms = gram.diagonal()
    squared = (norms[:, None] + norms[None, :] - 2 * gram).clamp_min(0)
    eye = torch.eye(len(gram), dtype=torch.bool, device=gram.device)
    return squared.masked_fill(eye, 0.0)


KERNELS = {
    "gk1": Kernel("gk1", "gaussian", (0.5,)),
    "gk2": Kernel("gk2", "gaussian", (1.0,)),
    "gk3": Kernel("gk3", "gaussian", (2.0,)),
    "gmk1": Kernel("gmk1", "gaussian", _geometric(2.0, 3)),
    "gmk2": Kernel("gmk2", "gaussian", _geometric(2.0, 5)),  # prototype: {¼, ½, 1, 2, 4}
    "gmk3": Kernel("gmk3", "gaussian", _geometric(2.0, 7)),
    "gmk4": Kernel("gmk4", "gaussian", _geometric(1.5, 5)),
    "gmk5": Kernel("gmk5", "gaussian", _geometric(3.0, 5)),
    "gmk6": Kernel("gmk6", "gaussian", _geometric(4.0, 5)),
    "lk": Kernel("lk", "linear"),
}
NAMES = tuple(KERNELS)


def get_kernel(kernel) -> Kernel:
    if isinstance(kernel, Kernel):
        return kernel
    if kernel not in KERNELS:
        raise unknown_name("kernel", kernel, KERNELS)
    return KERNELS[kernel]


def describe(kernel) -> str:
    k = get_kernel(kernel)
    if k.kind == "linear":
        return f"{k.name}: linear, k(a,b) = a·b"
    return f"{k.name}: Gaussian sum, σ ∈ {{{', '.join(f'{s:g}' for s in k.sigmas)}}} × β"
