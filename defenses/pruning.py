"""Neuron pruning of the last tapped layer (paper §6.2, Fig. 10; Neural Cleanse's mitigation).

Channels of the s3 tap are ranked by their mean activation on triggered inputs (the real
trigger, as the paper), largest first, or by (triggered − clean) with ``rank="diff"`` (Neural
Cleanse). Pruning zeroes a channel through a mask on the layer's output (a forward hook), so
the model's weights are never modified.
"""
from contextlib import contextmanager

import numpy as np
import torch

RANKINGS = ("triggered", "diff")


@torch.no_grad()
def mean_channel_activation(model, module, images_uint8: torch.Tensor, device, batch_size: int = 256,
                            transform=None) -> torch.Tensor:
    """Mean over samples and positions of each channel of ``module``'s output (C,)."""
    total, count, captured = None, 0, {}
    handle = module.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o))
    model.eval()
    try:
        for start in range(0, len(images_uint8), batch_size):
            chunk = images_uint8[start:start + batch_size].to(device).float().div_(255.0)
            model(transform(chunk) if transform is not None else chunk)
            out = captured["out"].float()
            per_channel = out.transpose(0, 1).flatten(1).sum(1) if out.dim() > 2 else out.sum(0)
            total = per_channel if total is None else total + per_channel
            count += out.shape[0] * (out[0, 0].numel() if out.dim() > 2 else 1)
    finally:
        handle.remove()
    return (total / count).cpu()


def prune_order(triggered: torch.Tensor, clean: torch.Tensor = None, rank: str = "triggered") -> torch.Tensor:
    """Channel indices, first to prune first."""
    if rank not in RANKINGS:
        raise ValueError(f"unknown pruning rank '{rank}'; choose one of {RANKINGS}")
    score = triggered if rank == "triggered" else triggered - clean
    return torch.argsort(score, descending=True, stable=True)


@contextmanager
def pruned(module, channels: torch.Tensor, num_channels: int):
    """Inside the block, ``module``'s output has ``channels`` zeroed."""
    keep = torch.ones(num_channels)
    keep[channels] = 0.0

    def hook(m, inputs, output):
        shape = (1, -1) + (1,) * (output.dim() - 2)
        return output * keep.to(output.device, output.dtype).view(shape)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def pruning_curve(model, module, order: torch.Tensor, evaluate, ratios=None) -> list:
    """[{ratio, pruned, **evaluate()}] for each ratio of ``order``'s channels pruned."""
    ratios = np.round(np.arange(0, 1.0001, 0.05), 2) if ratios is None else ratios
    curve = []
    for ratio in ratios:
        count = int(round(float(ratio) * len(order)))
        with pruned(module, order[:count], len(order)):
            curve.append({"ratio": float(ratio), "pruned": count, **evaluate()})
    return curve
