"""Kernels of the paper's TABLE 3, by name, as functions of the pooled Gram matrix.

Each kernel maps the Gram matrix G = Z·Zᵀ of the pooled (centred) samples Z to the kernel
matrix K, so nothing larger than N×N is ever built (the prototype's n×n×d tensor is avoided).

TABLE 3 ("Settings of different kernels. σ: the standard deviation"), exactly:

    GK1 σ = 1/2   GK2 σ = 1   GK3 σ = 2   LK (linear, no parameter)
    GMK1 σ = [1/2, 1, 2]        GMK4 σ = [1/3, 1, 3]
    GMK2 σ = [1/4 … 4]          GMK5 σ = [1/9 … 9]
    GMK3 σ = [1/8 … 8]          GMK6 σ = [1/27 … 27]     (powers of 2, resp. 3)

The Gaussian family is exp(−‖a−b‖² / (σ·β)) with the adaptive bandwidth
β = mean off-diagonal pooled squared distance, computed without gradient. σ is thus a
multiplier of β, as in the authors' prototype, whose kernel (``kernel_mul=2, kernel_num=5``) is
GMK2 and is the default. A mixture kernel sums the Gaussians over its σ list.
"""
from dataclasses import dataclass

import torch

from utils.errors import unknown_name


def _powers(base: float, count: int) -> tuple:
    """base^i for i = −count//2 … count//2: the σ lists of TABLE 3 (centred on 1)."""
    return tuple(float(base) ** (i - count // 2) for i in range(count))


@dataclass(frozen=True)
class Kernel:
    name: str
    kind: str  # "gaussian" or "linear"
    sigmas: tuple = ()

    @property
    def display(self) -> str:
        """How reports name the kernel: TABLE 3's capitals ("GMK2")."""
        return self.name.upper()

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


KERNELS = {  # TABLE 3
    "gk1": Kernel("gk1", "gaussian", (0.5,)),
    "gk2": Kernel("gk2", "gaussian", (1.0,)),
    "gk3": Kernel("gk3", "gaussian", (2.0,)),
    "gmk1": Kernel("gmk1", "gaussian", _powers(2.0, 3)),
    "gmk2": Kernel("gmk2", "gaussian", _powers(2.0, 5)),  # the prototype's kernel
    "gmk3": Kernel("gmk3", "gaussian", _powers(2.0, 7)),
    "gmk4": Kernel("gmk4", "gaussian", _powers(3.0, 3)),
    "gmk5": Kernel("gmk5", "gaussian", _powers(3.0, 5)),
    "gmk6": Kernel("gmk6", "gaussian", _powers(3.0, 7)),
    "lk": Kernel("lk", "linear"),
}


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
