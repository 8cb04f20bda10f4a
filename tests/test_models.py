import pytest
import torch

import models

EXPECTED_TAPS = {  # DESIGN §3 / paper App. A, width 1
    "vgg11": {"s1": (256, 8, 8), "s2": (512, 4, 4), "s3": (512, 2, 2)},
    "vgg16": {"s1": (256, 8, 8), "s2": (512, 4, 4), "s3": (512, 2, 2)},
    "resnet18": {"s1": (128, 16, 16), "s2": (256, 8, 8), "s3": (512, 4, 4)},
    "preactresnet18": {"s1": (128, 16, 16), "s2": (256, 8, 8), "s3": (512, 4, 4)},
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


def test_width_multiplier_scales_channels():
    model = models.build("vgg11", width=0.25)
    assert model.classifier.in_features == 128


def test_unknown_model_is_a_clear_error():
    from utils.errors import UserError

    with pytest.raises(UserError, match="unknown model 'vgg19'; choose one of"):
        models.build("vgg19")
