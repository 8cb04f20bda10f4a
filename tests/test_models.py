import pytest
import torch

import models

EXPECTED_TAPS = {  # paper App. A, width 1
    "vgg11": {"s1": (256, 8, 8), "s2": (512, 4, 4), "s3": (512, 2, 2)},
    "vgg16": {"s1": (256, 8, 8), "s2": (512, 4, 4), "s3": (512, 2, 2)},
    "resnet18": {"s1": (128, 16, 16), "s2": (256, 8, 8), "s3": (512, 4, 4)},
    "preactresnet18": {"s1": (128, 16, 16), "s2": (256, 8, 8), "s3": (512, 4, 4)},
    "preactresnet18_he": {"s1": (128, 16, 16), "s2": (256, 8, 8), "s3": (512, 4, 4)},
    # the NAD/ARGD code's WideResNets: the three group outputs
    "wrn16_1": {"s1": (16, 32, 32), "s2": (32, 16, 16), "s3": (64, 8, 8)},
    "wrn16_2": {"s1": (32, 32, 32), "s2": (64, 16, 16), "s3": (128, 8, 8)},
    "wrn40_1": {"s1": (16, 32, 32), "s2": (32, 16, 16), "s3": (64, 8, 8)},
    "wrn40_2": {"s1": (32, 32, 32), "s2": (64, 16, 16), "s3": (128, 8, 8)},
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


def _wrn_parameters(depth: int, widen: int, classes: int = 10) -> int:
    """WRN-d-k's parameter count written out: conv 3→16, then per group a first block (bn, 3×3 conv,
    bn, 3×3 conv, and a 1×1 shortcut conv when the channels change) and (d−4)/6 − 1 further blocks;
    bn + fc at the head. A BatchNorm of c channels holds 2c parameters."""
    blocks = (depth - 4) // 6
    total, previous = 3 * 16 * 9, 16
    for channels in (16 * widen, 32 * widen, 64 * widen):
        for index in range(blocks):
            incoming = previous if index == 0 else channels
            total += 2 * incoming + incoming * channels * 9 + 2 * channels + channels * channels * 9
            total += incoming * channels if incoming != channels else 0
        previous = channels
    return total + 2 * previous + previous * classes + classes


def test_wideresnet_parameter_counts():
    assert _wrn_parameters(16, 1) == 175_066  # "about 175k" (NAD's WRN-16-1)
    for name, depth, widen in (("wrn16_1", 16, 1), ("wrn16_2", 16, 2), ("wrn40_1", 40, 1), ("wrn40_2", 40, 2)):
        model = models.build(name)
        assert sum(p.numel() for p in model.parameters()) == _wrn_parameters(depth, widen), name


def test_wideresnet_block_is_preactivation_without_relu_after_the_addition():
    from models.wideresnet import WideBasicBlock

    torch.manual_seed(0)
    block = WideBasicBlock(4, 8, stride=2).eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        activated = torch.relu(block.bn1(x))
        expected = block.conv2(torch.relu(block.bn2(block.conv1(activated)))) + block.shortcut(activated)
        out = block(x)
    assert torch.allclose(out, expected) and (out < 0).any()  # no ReLU after the addition
    same = WideBasicBlock(4, 4, stride=1).eval()
    with torch.no_grad():
        direct = same.conv2(torch.relu(same.bn2(same.conv1(torch.relu(same.bn1(x)))))) + x
        assert same.shortcut is None and torch.allclose(same(x), direct)


def test_width_multiplier_scales_channels():
    model = models.build("vgg11", width=0.25)
    assert model.classifier.in_features == 128


def test_unknown_model_is_a_clear_error():
    from utils.errors import UserError

    with pytest.raises(UserError, match="unknown model 'vgg19'; choose one of"):
        models.build("vgg19")


def test_the_pairwise_max_pool_gives_max_pool2d_values_and_max_pool2d_gradients():
    import torch.nn.functional as F

    from models.pooling import max_pool_2x2, pairwise_max_2x2

    torch.manual_seed(0)
    x = torch.relu(torch.randn(4, 3, 9, 10))  # an odd height; ReLU's zeros tie
    x[:, :, 2:6, 2:6] = 0.5                   # positive ties, as the zero-padded border of an image gives
    assert torch.equal(pairwise_max_2x2(x), F.max_pool2d(x, 2, 2))
    # where a gradient flows it is max_pool2d's: all of it to the first of tied inputs, none split
    ours, reference = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    max_pool_2x2(ours).sum().backward()
    F.max_pool2d(reference, 2, 2).sum().backward()
    assert torch.equal(ours.grad, reference.grad)
    assert ours.grad[0, 0, 2:4, 2:4].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_vgg_trains_and_predicts_as_with_torchs_max_pool():
    import copy

    torch.manual_seed(0)
    ours = models.build("vgg11", width=0.125)
    reference = copy.deepcopy(ours)
    for index, module in enumerate(reference.features):
        if isinstance(module, torch.nn.MaxPool2d):
            reference.features[index] = torch.nn.MaxPool2d(kernel_size=2, stride=2)
    images = torch.nn.functional.pad(torch.rand(16, 3, 28, 28), (2, 2, 2, 2))
    labels = torch.randint(0, 10, (16,))
    for model in (ours, reference):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        model.eval()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), reference.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(ours(images), reference(images))


def test_every_registered_model_has_its_display_name():
    """Reports take an architecture's name from its registry, so a model added without one shows up here."""
    import models

    assert set(models.DISPLAY_NAMES) == set(models.REGISTRY)
    assert models.display_name("preactresnet18") == "PreActResNet-18" and models.display_name("unlisted") == "unlisted"


def test_the_global_average_pool_backpropagates_through_a_mean():
    """--deterministic is strict, and torch has no deterministic CUDA kernel for adaptive_avg_pool2d's
    backward; the models' 1×1 pool never reaches it: torch computes a 1×1 output as a mean (either
    memory format), whose backward is deterministic on every device."""
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    for model in (models.build("vgg11", 10, 0.125), models.build("wrn16_1", 10, 0.5)):
        assert type(model.pool(x).grad_fn).__name__ == "MeanBackward1"
    assert type(torch.nn.functional.adaptive_avg_pool2d(x, 1).grad_fn).__name__ == "MeanBackward1"
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert type(torch.nn.functional.adaptive_avg_pool2d(channels_last, 1).grad_fn).__name__ == "AsStridedBackward1"


def test_deterministic_is_required_not_warned_and_a_refused_op_is_one_line():
    from pipeline.prepare import configure_cuda, nondeterministic_op

    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        configure_cuda(True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        configure_cuda(False)  # a later stage or run in the process without the flag is not held to it
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, False
    # the wording of torch's refusal (ATen's alertNotDeterministic)
    refusal = RuntimeError("adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but you "
                           "set 'torch.use_deterministic_algorithms(True)'. You can turn off determinism just for this "
                           "operation, or you can use the 'warn_only=True' option, if that's acceptable for your "
                           "application. You can also file an issue at https://github.com/pytorch/pytorch/issues to "
                           "help us prioritize adding deterministic support for this operation.")
    error = nondeterministic_op(refusal)
    assert str(error).startswith("--deterministic: adaptive_avg_pool2d_backward_cuda does not have a deterministic "
                                 "implementation, so this run cannot be made deterministic") and "\n" not in str(error)
    assert nondeterministic_op(RuntimeError("CUDA out of memory")) is None
