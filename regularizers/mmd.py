"""Squared Maximum Mean Discrepancy between two sets of flattened features (paper Eq. 3)."""
import torch

from regularizers.kernels import get_kernel

ESTIMATORS = ("biased", "unbiased")


def mmd2(x: torch.Tensor, y: torch.Tensor, kernel="gmk2", estimator: str = "biased") -> torch.Tensor:
    """MMD²(X, Y) with memory O(N² + N·d), N = n + m; differentiable in both x and y.

    biased (V-statistic, the prototype):  mean K_xx + mean K_yy − 2 mean K_xy.
    unbiased (U-statistic, Gretton et al. 2012): diagonals of K_xx and K_yy excluded; when
    n = m the diagonal of K_xy is excluded too (their MMD²_u), so MMD²_u(X, X) = 0 exactly.

    Features of any shape (n, ...) are flattened and computed in float32 even under autocast;
    float64 features stay float64, so a float64 model is float64 throughout (tests/test_distributed.py).
    """
    return pooled_mmd2(torch.cat([x.flatten(1), y.flatten(1)]), len(x), kernel, estimator)


def pooled_mmd2(pooled: torch.Tensor, n: int, kernel="gmk2", estimator: str = "biased") -> torch.Tensor:
    """MMD² between rows [:n] and rows [n:] of one pooled feature tensor (see :func:`mmd2`).

    Taking the two groups as one tensor lets the regulariser gather them from a batch with a
    single index, so backward scatters one gradient per level instead of two.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator '{estimator}'; choose one of {ESTIMATORS}")
    m = len(pooled) - n
    minimum = 2 if estimator == "unbiased" else 1
    if n < minimum or m < minimum:
        raise ValueError(f"mmd2 needs at least {minimum} samples per group, got {n} and {m}")
    kernel = get_kernel(kernel)
    with torch.autocast(device_type=pooled.device.type, enabled=False):
        pooled = pooled.flatten(1).to(torch.promote_types(pooled.dtype, torch.float32))  # float64 stays float64
        # Centring changes no distance but keeps the Gram-based ‖a−b‖² accurate in float32.
        pooled = pooled - pooled.detach().mean(0, keepdim=True)
        k = kernel(pooled @ pooled.T)
        k_xx, k_yy, k_xy = k[:n, :n], k[n:, n:], k[:n, n:]
        if estimator == "biased":
            return k_xx.mean() + k_yy.mean() - 2 * k_xy.mean()
        within = _off_diagonal_mean(k_xx) + _off_diagonal_mean(k_yy)
        across = _off_diagonal_mean(k_xy) if n == m else k_xy.mean()
        return within - 2 * across


def _off_diagonal_mean(square: torch.Tensor) -> torch.Tensor:
    count = len(square)
    return (square.sum() - square.diagonal().sum()) / (count * (count - 1))
