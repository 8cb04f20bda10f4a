"""Kernels, MMD², the multi-level MMD regulariser (paper §3, Eq. 3 and Eq. 6) and the other latent
regularisers it is compared with (regularizers/registry.py)."""
from regularizers.kernels import KERNELS, Kernel, describe, get_kernel
from regularizers.mmd import ESTIMATORS, mmd2
from regularizers.multilevel import REDUCTIONS, LatentRegularizer, MultiLevelMMD
from regularizers.registry import NAMES as REGULARIZER_NAMES
from regularizers.registry import REGULARIZERS, create

__all__ = ["mmd2", "MultiLevelMMD", "LatentRegularizer", "KERNELS", "Kernel", "get_kernel", "describe", "ESTIMATORS",
           "REDUCTIONS", "REGULARIZERS", "REGULARIZER_NAMES", "create"]
