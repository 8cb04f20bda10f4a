"""ResNet-18 for 32×32 inputs (He et al. 2016, CIFAR stem as in kuangliu/pytorch-cifar)."""
import torch.nn as nn
import torch.nn.functional as F

from models.vgg import scaled


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Taps: the outputs of layer2/3/4 (128×16×16, 256×8×8, 512×4×4 at width 1; paper App. A)."""

    taps = {"s1": "layer2", "s2": "layer3", "s3": "layer4"}

    def __init__(self, block=BasicBlock, num_blocks=(2, 2, 2, 2), num_classes: int = 10,
                 width: float = 1.0, he_preact: bool = False):
        super().__init__()
        self.in_planes = scaled(64, width)
        # Paper App. A, rows 1-3 of both R-18 and P-18: Conv, BN, ReLU. He et al.'s own
        # pre-activation network has a conv-only stem and a BN+ReLU before pooling instead.
        stem = [nn.Conv2d(3, self.in_planes, 3, stride=1, padding=1, bias=False)]
        if not he_preact:
            stem += [nn.BatchNorm2d(self.in_planes), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        self.layer1 = self._make_layer(block, scaled(64, width), num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, scaled(128, width), num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, scaled(256, width), num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, scaled(512, width), num_blocks[3], stride=2)
        # App. A rows 52-53: GAP and FC right after the last block (s3 = layer4's output either way).
        self.head = nn.Sequential(nn.BatchNorm2d(self.in_planes), nn.ReLU()) if he_preact else nn.Identity()
        self.linear = nn.Linear(self.in_planes * block.expansion, num_classes)

    @property
    def stages(self) -> list:
        """The stem, every residual block's output and the logits, in forward order: the layers a
        detector that reads the whole network (TED) follows."""
        blocks = [f"{group}.{index}" for group in ("layer1", "layer2", "layer3", "layer4")
                  for index in range(len(getattr(self, group)))]
        return ["stem"] + blocks + ["linear"]

    def _make_layer(self, block, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for layer_stride in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, layer_stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        out = self.head(out)
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet18(num_classes: int = 10, width: float = 1.0) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, width)
