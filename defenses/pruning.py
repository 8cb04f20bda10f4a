"""Neuron pruning of the last tapped layer (paper §6.2, Fig. 10; Neural Cleanse's mitigation).

Channels of the s3 tap are ranked by their mean activation on triggered inputs (the real
trigger, as the paper), largest first, or by (triggered − clean) with ``rank="diff"`` (Neural
Cleanse). Pruning zeroes a channel through a mask on the layer's output (a forward hook), so
the model's weights are never modified.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from inference import Subject, attacked_mask, channel_means
from models import tap_modules
from utils.params import check_params, param

RANKINGS = ("triggered", "diff")


@dataclass
class PruneOptions:
    """Each field is a defend.py flag ``--prune_<name>``."""

    rank: str = param("triggered", "rank s3's channels by mean activation on triggered inputs (the paper) "
                      "or by triggered − clean (Neural Cleanse)", choices=RANKINGS)

    def __post_init__(self):
        check_params(self)


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


def channel_ranking(subject: Subject, options: PruneOptions = None) -> dict:
    """Rank the s3 tap's channels on the test set and measure BA/ASR as they are pruned (Fig. 10):
    {layer, channels, rank, order, curve}."""
    options = options or PruneOptions()
    data, model = subject.data, subject.model
    module = tap_modules(model, ("s3",))["s3"]
    attacked = data.test_x[attacked_mask(data.test_y, subject.attack, subject.target)]
    triggered = channel_means(model, module, attacked, subject.device, subject.batch_size, subject.attack)
    clean = channel_means(model, module, data.test_x, subject.device, subject.batch_size)
    order = prune_order(triggered, clean, options.rank)
    curve = pruning_curve(model, module, order, subject.ba_asr)
    return {"layer": model.taps["s3"], "channels": len(order), "rank": options.rank, "order": order.tolist(),
            "curve": curve}
