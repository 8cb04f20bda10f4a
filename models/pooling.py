"""VGG's 2×2, stride-2 max-pool, computed on the CPU at NCHW inference as two elementwise maxima.

At the widths and batch sizes this project runs on a CPU, torch's NCHW CPU ``max_pool2d`` kernel
costs about as much as the convolution before it (a width-0.25 VGG-11 on a batch of 512 32×32
images: about 55 ms against 7 ms for the maxima, one thread; ``benchmarks/maxpool.py`` measures it),
and NCHW inference (evaluation, STRIP's blends, every BA/ASR) spent a sixth of its time there. A
channels-last model (``--channels_last``, ``experiments/reproduce.py``'s default) does not come here:
torch's channels-last kernel is fast already.

A maximum is exact whichever way it is taken, so the values are ``max_pool2d``'s (a tie of −0 and
+0 may come out with the other sign, which no later sum can tell apart). Gradients are not: where
two inputs of a window tie (common here, the zero-padded border of a 28→32 image gives equal
activations), ``max_pool2d`` routes the gradient to the first and ``torch.maximum`` splits it. So the
maxima are used only where no gradient can flow (no autograd, or an input that does not require
it), on a CPU, and for an NCHW-contiguous input; everything else, training and Neural Cleanse's
trigger optimisation included, runs ``max_pool2d`` itself.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def pairwise_max_2x2(x: torch.Tensor) -> torch.Tensor:
    """The values of ``F.max_pool2d(x, 2, 2)`` (odd trailing rows and columns dropped, as it does), as
    the maximum of the rows' pairs and then of the columns'."""
    x = x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]
    rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2, 2)``: :func:`pairwise_max_2x2` where no gradient can flow, on a CPU and an
    NCHW-contiguous input; ``max_pool2d`` itself everywhere else."""
    if x.device.type != "cpu" or not x.is_contiguous() or (torch.is_grad_enabled() and x.requires_grad):
        return F.max_pool2d(x, 2, 2)
    return pairwise_max_2x2(x)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(kernel_size=2, stride=2)`` with :func:`max_pool_2x2`'s forward (no parameters:
    checkpoints are unchanged)."""

    def __init__(self):
        super().__init__(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool_2x2(x)
