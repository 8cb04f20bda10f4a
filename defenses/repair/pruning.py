"""Neuron pruning of the last tapped layer (paper §6.2, Fig. 10; Neural Cleanse's mitigation).

Channels of the s3 tap are ranked by their mean activation on triggered inputs (the real
trigger, as the paper), largest first, or by (triggered − clean) with ``rank="diff"`` (Neural
Cleanse), or by |mean on triggered inputs| with ``rank="abs"``. Pruning zeroes a channel through a
mask on the layer's output (a forward hook), so the model's weights are never modified. The layers
before the pruned one run once per curve, not once per ratio (inference/cut.py).

:func:`pruning_places` is C8's diagnostic: the same curves at the s3 tap and at the input of the
model's last convolution (for PreActResNet-18, the last ReLU, since App. A's s3 is the last block's
sum with no ReLU after it), under each ranking, on a seeded test subset.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from inference import Subject, attacked_mask, channel_means
from inference.cut import repeated_ba_asr
from models import tap_modules
from utils.params import check_params, param
from utils.seed import generator

RANKINGS = ("triggered", "diff", "abs")


@dataclass
class PruneOptions:
    """Each field is a defend.py flag ``--prune_<name>``."""

    rank: str = param("triggered", "rank s3's channels by mean activation on triggered inputs (the paper), "
                      "by triggered − clean (Neural Cleanse) or by |mean activation on triggered inputs| (abs: a "
                      "channel can carry the trigger with a negative sign where no ReLU follows)", choices=RANKINGS)

    def __post_init__(self):
        check_params(self)


def prune_order(triggered: torch.Tensor, clean: torch.Tensor = None, rank: str = "triggered") -> torch.Tensor:
    """Channel indices, first to prune first."""
    if rank not in RANKINGS:
        raise ValueError(f"unknown pruning rank '{rank}'; choose one of {RANKINGS}")
    score = {"triggered": triggered, "abs": triggered.abs(), "diff": triggered - clean if clean is not None else None}[rank]
    return torch.argsort(score, descending=True, stable=True)


@contextmanager
def pruned(module, channels: torch.Tensor, num_channels: int, on: str = "output"):
    """Inside the block, ``module``'s output (or, with ``on="input"``, its input) has ``channels``
    zeroed."""
    keep = torch.ones(num_channels)
    keep[channels] = 0.0

    def masked(tensor):
        shape = (1, -1) + (1,) * (tensor.dim() - 2)
        return tensor * keep.to(tensor.device, tensor.dtype).view(shape)

    if on == "input":
        handle = module.register_forward_pre_hook(lambda m, inputs: (masked(inputs[0]), *inputs[1:]))
    else:
        handle = module.register_forward_hook(lambda m, inputs, output: masked(output))
    try:
        yield
    finally:
        handle.remove()


def pruning_curve(model, module, order: torch.Tensor, evaluate, ratios=None, on: str = "output") -> list:
    """[{ratio, pruned, **evaluate()}] for each ratio of ``order``'s channels pruned."""
    ratios = np.round(np.arange(0, 1.0001, 0.05), 2) if ratios is None else ratios
    curve = []
    for ratio in ratios:
        count = int(round(float(ratio) * len(order)))
        with pruned(module, order[:count], len(order), on):
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
    evaluate = repeated_ba_asr(model, module, data.test_x, data.test_y, subject.attack, subject.target,
                               subject.device, subject.batch_size, subject.amp)
    curve = pruning_curve(model, module, order, evaluate)
    return {"layer": model.taps["s3"], "channels": len(order), "rank": options.rank, "order": order.tolist(),
            "curve": curve}


def last_convolution(model) -> tuple:
    """(name, module) of the model's last Conv2d in registration order."""
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)]
    return found[-1]


@dataclass
class PlacesOptions:
    """Each field is a flag ``--places_<name>`` of the pipeline's prune_places stage."""

    subset: int = param(2000, "clean test images (seeded) the diagnostic curves are measured on; their non-target "
                              "ones, triggered, give the ASR", low=10)
    step: float = param(0.1, "pruned-ratio step of the diagnostic curves", low=0.01, high=0.5)

    def __post_init__(self):
        check_params(self)


def pruning_places(subject: Subject, options: PlacesOptions = None) -> dict:
    """C8's diagnostic: pruning curves at two places × every ranking, on a seeded test subset.

    Places: ``s3`` (the tap's output, what the paper prunes) and ``last_conv_input`` (the input of
    the model's last convolution: after a ReLU in every model here; for App. A's PreActResNet-18,
    whose s3 is the last block's sum with no ReLU, it is the last ReLU before the head). Each curve
    gives the first ratio where ASR < 0.2 and BA there, and the share of the place's channels whose
    mean on triggered inputs is negative (a channel a largest-first ranking prunes last)."""
    options = options or PlacesOptions()
    data, model = subject.data, subject.model
    index = torch.randperm(len(data.test_y), generator=generator(subject.seed, "prune-places"))[:options.subset]
    test_x, test_y = data.test_x[index], data.test_y[index]
    attacked = test_x[attacked_mask(test_y, subject.attack, subject.target)]
    tap = tap_modules(model, ("s3",))["s3"]
    conv_name, conv = last_convolution(model)
    places = {"s3": (model.taps["s3"], tap, "output"), "last_conv_input": (conv_name, conv, "input")}
    ratios = np.round(np.arange(0, 1.0001, options.step), 3)
    result = {"subset": len(test_y), "places": {}, "curves": {}}
    for place, (name, module, on) in places.items():
        triggered = channel_means(model, module, attacked, subject.device, subject.batch_size, subject.attack, on)
        clean = channel_means(model, module, test_x, subject.device, subject.batch_size, on=on)
        result["places"][place] = {"module": name, "hook": on, "channels": len(triggered),
                                   "negative_on_triggered": float((triggered < 0).float().mean())}
        evaluate = repeated_ba_asr(model, module, test_x, test_y, subject.attack, subject.target, subject.device,
                                   subject.batch_size, subject.amp)
        for rank in RANKINGS:
            order = prune_order(triggered, clean, rank)
            result["curves"][f"{place}/{rank}"] = pruning_curve(model, module, order, evaluate, ratios, on)
    return result
