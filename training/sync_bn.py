"""``--sync_bn``: BatchNorm whose batch statistics are those of the global batch under DDP.

On CUDA this is PyTorch's own ``nn.SyncBatchNorm``. PyTorch refuses it on the CPU, where the gloo
backend runs (the DDP tests, a CPU cluster), so there :class:`GlobalBatchNorm` computes the same
thing with two autograd-aware all-reduces: the global mean, then the global mean squared deviation
(the two-pass form, as accurate in float32 as one process's BatchNorm).

Both compute in float32 whatever autocast does. Besides accuracy, this keeps the ranks' messages
of one dtype: when the last batch of an epoch has fewer rows than there are ranks, a rank holds
no rows, and PyTorch's SyncBatchNorm sends that rank's (empty) statistics in the input's dtype,
bf16 under ``--amp``, while the other ranks send the float32 that its statistics kernel returns:
the all-gather then hangs or mixes bytes.
"""
import torch
import torch.nn as nn

from utils.distributed import Context


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm over (N, H, W) of the global batch; identical to nn.BatchNorm2d in eval mode and
    in a single process. The state dict's keys are BatchNorm's, so checkpoints load anywhere."""

    def __init__(self, num_features: int, context: Context, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.context.active):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return self._global_forward(x.to(self.weight.dtype))

    def _global_forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        local_count = x.numel() // x.shape[1]
        count = self.context.all_reduce_sum(torch.tensor([float(local_count)], device=x.device, dtype=x.dtype))
        mean = self.context.all_reduce_sum(x.sum(dims), autograd=True) / count
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = x - mean.view(shape)
        var = self.context.all_reduce_sum(centred.pow(2).sum(dims), autograd=True) / count
        with torch.no_grad():
            self.num_batches_tracked += 1
            unbiased = var * count / (count - 1).clamp(min=1)
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.detach())
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased.detach())
        normalised = centred * torch.rsqrt(var + self.eps).view(shape)
        return normalised * self.weight.view(shape) + self.bias.view(shape)


class Float32SyncBatchNorm(nn.SyncBatchNorm):
    """PyTorch's SyncBatchNorm (CUDA), fed float32 and run outside autocast (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))


def convert_sync_batchnorm(model: nn.Module, context: Context, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d of ``model`` in place (the parameters and running statistics are
    kept) by the synchronised kind for ``device``; returns ``model``. Call it before registering
    forward hooks on BatchNorm modules: the replaced modules lose theirs."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                replacement = (Float32SyncBatchNorm(child.num_features, child.eps, child.momentum)
                               if device.type == "cuda" else
                               GlobalBatchNorm(child.num_features, context, child.eps, child.momentum))
                replacement.load_state_dict(child.state_dict())
                setattr(parent, name, replacement.to(device=child.weight.device, dtype=child.weight.dtype))
    return model
