"""A model cut before a module (inference/cut.py): the rest, fed what the part before it kept,
gives the whole model's logits, with the pruning mask's hooks in force."""
import pytest
import torch
import torch.nn as nn

import models
from defenses import pruned
from defenses.repair.pruning import last_convolution
from inference import benign_accuracy_and_asr
from inference.cut import NotCuttable, cut_before, repeated_ba_asr

PLACES = [("vgg11", "s3", "output"), ("vgg11", "last_conv", "input"),
          ("preactresnet18", "s3", "output"), ("preactresnet18", "last_conv", "input"),
          ("wrn16_1", "s3", "output"), ("wrn16_1", "last_conv", "input")]


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = models.build(name, num_classes=10, width=0.125).eval()
    # BatchNorm's running statistics away from (0, 1), so that a layer the cut skipped or ran
    # twice would show in the logits
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


def _place(model, place: str):
    return models.tap_modules(model, ("s3",))["s3"] if place == "s3" else last_convolution(model)[1]


@pytest.mark.parametrize("name, place, on", PLACES)
def test_the_rest_fed_the_kept_tensors_gives_the_whole_models_logits_pruned_or_not(name, place, on):
    model = _model(name)
    module = _place(model, place)
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    cut = cut_before(model, module)
    with torch.no_grad():
        kept = cut.before(images)
        assert torch.equal(cut.after(*kept), model(images))
        probe = {}
        handle = (module.register_forward_pre_hook(lambda m, i: probe.__setitem__("n", i[0].shape[1])) if on == "input"
                  else module.register_forward_hook(lambda m, i, o: probe.__setitem__("n", o.shape[1])))
        model(images)
        handle.remove()
        with pruned(module, torch.arange(0, probe["n"], 2), probe["n"], on):
            whole = model(images)
            rest = cut.after(*kept)
    assert torch.equal(rest, whole)
    assert not torch.equal(whole, model(images).detach())  # the mask changed the logits


def test_the_part_before_the_cut_stops_before_the_module():
    """VGG-11's s3 is the last ReLU of ``features``: the part before it keeps one tensor, that
    ReLU's input, of the ReLU's input shape."""
    model = _model("vgg11")
    module = _place(model, "s3")
    seen = {}
    handle = module.register_forward_pre_hook(lambda m, i: seen.__setitem__("input", i[0].clone()))  # ReLU(inplace)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        model(images)
        kept = cut_before(model, module).before(images)
    handle.remove()
    assert len(kept) == 1 and torch.equal(kept[0], seen["input"])


def test_a_residual_blocks_input_is_kept_beside_the_modules():
    """In PreActResNet-18's last block the last convolution's input and the block's shortcut both
    come from before the cut: the rest needs both."""
    model = _model("preactresnet18")
    kept = cut_before(model, last_convolution(model)[1]).before(torch.rand(2, 3, 32, 32))
    assert len(kept) >= 2


class _Doubling(nn.Module):
    def forward(self, x):
        return x.mul_(2.0)


class _InPlaceAfterTheCut(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.doubling, self.head = nn.Conv2d(3, 4, 3), _Doubling(), nn.Linear(4, 10)

    def forward(self, x):
        return self.head(self.doubling(self.first(x)).mean((2, 3)))


def test_an_in_place_layer_after_the_cut_leaves_the_kept_tensors_as_they_were():
    model = _InPlaceAfterTheCut().eval()
    images = (torch.rand(5, 3, 8, 8) * 255).to(torch.uint8)
    labels = torch.arange(5)
    evaluate = repeated_ba_asr(model, model.doubling, images, labels, lambda x: 1.0 - x, target=0, device="cpu")
    expected = benign_accuracy_and_asr(model, images, labels, lambda x: 1.0 - x, 0, "cpu")
    assert evaluate() == expected
    assert evaluate() == expected  # a second call reads the kept tensors unchanged


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 10)

    def forward(self, x):
        h = self.first(x).mean((2, 3))
        if h.sum() > 0:  # a branch on the data: torch.fx cannot trace it
            h = -h
        return self.head(h)


def test_a_model_torch_fx_cannot_trace_is_measured_whole():
    model = _DataDependent().eval()
    with pytest.raises(NotCuttable, match="torch.fx cannot trace the model"):
        cut_before(model, model.head)
    images = (torch.rand(7, 3, 8, 8) * 255).to(torch.uint8)
    labels = torch.arange(7) % 3
    evaluate = repeated_ba_asr(model, model.head, images, labels, lambda x: x.flip(3), target=1, device="cpu")
    assert evaluate() == benign_accuracy_and_asr(model, images, labels, lambda x: x.flip(3), 1, "cpu")


def test_a_module_outside_the_model_is_refused():
    with pytest.raises(NotCuttable, match="not a submodule"):
        cut_before(_model("vgg11"), nn.ReLU())
