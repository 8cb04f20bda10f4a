"""Model registry: ``models.build(name, num_classes=10, width=1.0)``.

Every model declares ``model.taps == {"s1": module_name, "s2": ..., "s3": ...}``, the module
names whose outputs are the paper's s1/s2/s3 representations.
"""
import torch.nn as nn

from models.preact_resnet import preactresnet18, preactresnet18_he
from models.resnet import resnet18
from models.vgg import vgg11, vgg16
from models.wideresnet import wrn16_1, wrn16_2, wrn40_1, wrn40_2
from utils.errors import ParameterError, UserError, unknown_name

REGISTRY = {"vgg11": vgg11, "vgg16": vgg16, "resnet18": resnet18, "preactresnet18": preactresnet18,
            "preactresnet18_he": preactresnet18_he, "wrn16_1": wrn16_1, "wrn16_2": wrn16_2, "wrn40_1": wrn40_1,
            "wrn40_2": wrn40_2}
NAMES = tuple(REGISTRY)
# how reports and figures name each architecture
DISPLAY_NAMES = {"vgg11": "VGG-11", "vgg16": "VGG-16", "resnet18": "ResNet-18", "preactresnet18": "PreActResNet-18",
                 "preactresnet18_he": "PreActResNet-18 (He init.)", "wrn16_1": "WRN-16-1", "wrn16_2": "WRN-16-2",
                 "wrn40_1": "WRN-40-1", "wrn40_2": "WRN-40-2"}
LEVELS = ("s1", "s2", "s3")
# what a --width (channel multiplier) may be, for every flag that is one: beyond 16 a layer's channel count
# overflows long before it fits in memory
WIDTH_DOMAIN = {"low": 0.0, "low_open": True, "high": 16.0}


def build(name: str, num_classes: int = 10, width: float = 1.0) -> nn.Module:
    if name not in REGISTRY:
        raise unknown_name("model", name, REGISTRY)
    if not width > 0:
        raise ParameterError("width", f"must be positive, got {width}")
    return REGISTRY[name](num_classes=num_classes, width=width)


def display_name(name: str) -> str:
    """How reports and figures name the architecture ``name`` (its registry name when it has none)."""
    return DISPLAY_NAMES.get(name, name)


def tap_modules(model: nn.Module, levels=LEVELS) -> dict:
    """{level: module} for the model's declared taps."""
    unknown = [level for level in levels if level not in model.taps]
    if unknown:
        raise UserError(f"unknown tap level {unknown}; {type(model).__name__} has {sorted(model.taps)}")
    return {level: model.get_submodule(model.taps[level]) for level in levels}


__all__ = ["build", "tap_modules", "display_name", "NAMES", "LEVELS", "DISPLAY_NAMES"]
