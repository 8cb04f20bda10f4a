"""Kernels, MMD² and the multi-level MMD regulariser (paper §3, Eq. 3 and Eq. 6)."""
from regularizers.kernels import KERNELS, Kernel, describe, get_kernel
from regularizers.mmd import ESTIMATORS, mmd2
from regularizers.multilevel import REDUCTIONS, MultiLevelMMD

__all__ = ["mmd2", "MultiLevelMMD", "KERNELS", "Kernel", "get_kernel", "describe", "ESTIMATORS",
           "REDUCTIONS"]
