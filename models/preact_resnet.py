"""PreActResNet-18 for 32×32 inputs (He et al. 2016, identity mappings), as in the paper's App. A.

App. A's P-18 column: Conv, BN, ReLU (rows 1-3), eight pre-activation basic blocks (PBB), then
GAP and FC right after the last block (rows 52-53). ``preactresnet18_he`` is He et al.'s own
form instead: a conv-only stem and a BN+ReLU between the last block and the pooling.
"""
import torch.nn as nn
import torch.nn.functional as F

from models.resnet import ResNet


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def preactresnet18(num_classes: int = 10, width: float = 1.0) -> ResNet:
    """Paper App. A's P-18. Taps: outputs of layer2/3/4 (its layers 27/39/51), as for ResNet-18."""
    return ResNet(PreActBlock, (2, 2, 2, 2), num_classes, width)


def preactresnet18_he(num_classes: int = 10, width: float = 1.0) -> ResNet:
    """He et al.'s PreActResNet-18: conv-only stem, BN+ReLU before pooling; same taps."""
    return ResNet(PreActBlock, (2, 2, 2, 2), num_classes, width, he_preact=True)
