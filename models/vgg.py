"""VGG-11 / VGG-16 for 32×32 inputs (paper App. A).

Differences from torchvision's VGG, as in the paper: BatchNorm after every conv, no max-pool
after stage 5, global average pooling and a single linear classifier.
"""
import torch.nn as nn

from models.pooling import MaxPool2x2

# Channels per conv, "M" = 2×2 max-pool between stages. Stage 5 is not followed by a pool.
CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
}


def scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class VGG(nn.Module):
    """``taps`` are the last ReLU of stages 3, 4 and 5 of ``features``.

    Their indices in ``features`` are the paper's 1-based layer numbers minus one
    (VGG-11: layers 14/21/28 → ``features.13/20/27``; VGG-16: 23/33/43 → ``features.22/32/42``).
    """

    def __init__(self, name: str = "vgg11", num_classes: int = 10, width: float = 1.0):
        super().__init__()
        layers, relu_at_stage_end, in_channels = [], [], 3
        for item in CONFIGS[name]:
            if item == "M":
                relu_at_stage_end.append(len(layers) - 1)
                layers.append(MaxPool2x2())
                continue
            out_channels = scaled(item, width)
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
            in_channels = out_channels
        relu_at_stage_end.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)
        self.taps = {level: f"features.{relu_at_stage_end[stage]}"
                     for level, stage in (("s1", 2), ("s2", 3), ("s3", 4))}
        # every convolution's ReLU, then the logits: the layers a detector that reads the whole
        # network (TED) follows, in forward order
        self.stages = [f"features.{index}" for index, layer in enumerate(layers) if isinstance(layer, nn.ReLU)]
        self.stages.append("classifier")

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg11(num_classes: int = 10, width: float = 1.0) -> VGG:
    return VGG("vgg11", num_classes, width)


def vgg16(num_classes: int = 10, width: float = 1.0) -> VGG:
    return VGG("vgg16", num_classes, width)
