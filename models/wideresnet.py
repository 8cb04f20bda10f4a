"""Pre-activation WideResNet-d-k (Zagoruyko & Komodakis 2016) as in the NAD and ARGD code, the
architecture those erasing defenses are evaluated on (WRN-16-1 by default).

conv 3→16; three groups of (d−4)/6 BasicBlocks with 16k, 32k, 64k channels and strides 1, 2, 2;
a BasicBlock is bn→relu→conv3×3(stride)→bn→relu→conv3×3, its shortcut a 1×1 conv of the activated
input when the channel count changes and the raw input otherwise; nothing after the addition;
head relu(bn)→global average pool→fc. The levels s1, s2, s3 are the three group outputs
(16k×32×32, 32k×16×16, 64k×8×8 at 32×32 inputs), the activations NAD and ARGD distil.

The head pools globally where the reference code calls avg_pool2d(8): the same at 32×32 inputs.
"""
import math

import torch.nn as nn
import torch.nn.functional as F

from models.vgg import scaled


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x):
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        return out + (x if self.shortcut is None else self.shortcut(activated))


class WideResNet(nn.Module):
    """Taps: the outputs of the three block groups (the reference code's activation1/2/3)."""

    taps = {"s1": "block1", "s2": "block2", "s3": "block3"}

    def __init__(self, depth: int = 16, widen: int = 1, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a WideResNet's depth must be 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        channels = [scaled(16, width)] + [scaled(c * widen, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(3, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = self._group(channels[0], channels[1], blocks, stride=1)
        self.block2 = self._group(channels[1], channels[2], blocks, stride=2)
        self.block3 = self._group(channels[2], channels[3], blocks, stride=2)
        self.bn = nn.BatchNorm2d(channels[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[3], num_classes)
        # the reference code's initialisation: He-normal convs (fan-out), unit BN, zero biases
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    @property
    def stages(self) -> list:
        """The first convolution, every block's output and the logits, in forward order (TED's layers)."""
        return (["conv1"] + [name for name, module in self.named_modules() if isinstance(module, WideBasicBlock)]
                + ["fc"])

    @staticmethod
    def _group(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(*[WideBasicBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1)
                               for i in range(blocks)])

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(F.relu(self.bn(out))).flatten(1))


def wrn16_1(num_classes: int = 10, width: float = 1.0) -> WideResNet:
    return WideResNet(16, 1, num_classes, width)


def wrn16_2(num_classes: int = 10, width: float = 1.0) -> WideResNet:
    return WideResNet(16, 2, num_classes, width)


def wrn40_1(num_classes: int = 10, width: float = 1.0) -> WideResNet:
    return WideResNet(40, 1, num_classes, width)


def wrn40_2(num_classes: int = 10, width: float = 1.0) -> WideResNet:
    return WideResNet(40, 2, num_classes, width)
