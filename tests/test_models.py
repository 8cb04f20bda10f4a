import pytest
import torch

import models

EXPECTED_TAPS = {  # paper App. A, width 1
    "vgg11": {"s1": (256, 8, 8), "s2": (512, 4, 4), "s3": (512, 2, 2)},
    "vgg16": {"s1": (256, 8, 8), "s2": (512, 4, 4), "s3": (512, 2, 2)},
    "resnet18": {"s1": (128, 16, 16), "s2": (256, 8, 8), "s3": (512, 4, 4)},
    "preactresnet18": {"s1": (128, 16, 16), "s2": (256, 8, 8), "s3": (512, 4, 4)},
    "preactresnet18_he": {"s1": (128, 16, 16), "s2": (256, 8, 8), "s3": (512, 4, 4)},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_TAPS))
def test_tap_shapes_at_width_one(name):
    model = models.build(name, num_classes=7).eval()
    shapes = {}
    for level, module in models.tap_modules(model).items():
        module.register_forward_hook(lambda m, i, o, level=level: shapes.__setitem__(level, tuple(o.shape[1:])))
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 7)
    assert shapes == EXPECTED_TAPS[name]


def test_vgg_taps_are_the_papers_layer_numbers_minus_one():
    assert models.build("vgg11").taps == {"s1": "features.13", "s2": "features.20", "s3": "features.27"}
    assert models.build("vgg16").taps == {"s1": "features.22", "s2": "features.32", "s3": "features.42"}
    assert isinstance(models.build("vgg11").get_submodule("features.13"), torch.nn.ReLU)


def test_preactresnet18_follows_appendix_a_rows():
    """P-18: rows 1-3 Conv, BN, ReLU; eight PBBs; rows 52-53 GAP and FC right after the last block."""
    from models.preact_resnet import PreActBlock

    model = models.build("preactresnet18", width=0.25).eval()
    assert [type(m) for m in model.stem] == [torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.ReLU]
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    assert len(blocks) == 8
    assert model.taps == {"s1": "layer2", "s2": "layer3", "s3": "layer4"}
    last = {}
    model.layer4.register_forward_hook(lambda m, i, o: last.__setitem__("s3", o))
    with torch.no_grad():
        logits = model(torch.rand(3, 3, 32, 32))
        direct = model.linear(last["s3"].mean((2, 3)))
    assert torch.allclose(logits, direct, atol=1e-6)
    he = models.build("preactresnet18_he", width=0.25)
    assert [type(m) for m in he.stem] == [torch.nn.Conv2d]
    assert [type(m) for m in he.head] == [torch.nn.BatchNorm2d, torch.nn.ReLU]


def test_width_multiplier_scales_channels():
    model = models.build("vgg11", width=0.25)
    assert model.classifier.in_features == 128


def test_unknown_model_is_a_clear_error():
    from utils.errors import UserError

    with pytest.raises(UserError, match="unknown model 'vgg19'; choose one of"):
        models.build("vgg19")
