"""The GPU fast path, run on the CPU: --amp (bf16 autocast, losses in float32), --channels_last and
--compile train the same model as the plain path, to the precision each allows.

Float32 BatchNorm gradients sum over N·H·W elements, so any change of summation order (another
memory format, fused kernels) moves them by ~1e-3 relative even in one step (in float64 the two
formats agree to 1e-15); the tests therefore compare the loss of the same step tightly and the
update loosely, against the size of the update itself."""
from pathlib import Path

import pytest
import torch

import datasets
import models
from attacks import build as build_attack
from attacks.poisoning import PoisonedData
from training import Trainer, TrainSettings

BATCH, STEPS, WIDTH = 64, 1, 0.5


@pytest.fixture(scope="module")
def poisoned():
    data = datasets.build("digits", seed=0)
    return PoisonedData(data.train_x, data.train_y, build_attack("patched"), poison_ratio=0.2)


def steps(poisoned: PoisonedData, model_name: str = "wrn16_1", **settings) -> tuple:
    """(state dict, each step's loss terms, trainer) after STEPS ML-MMDR steps from a seeded init.
    WRN-16-1 by default: it has no max-pool, whose argmax can flip between two near-equal
    activations when a change of summation order alters the last float bit."""
    torch.manual_seed(0)
    model = models.build(model_name, num_classes=10, width=WIDTH)
    trainer = Trainer(model, poisoned, TrainSettings(batch_size=BATCH, mlmmdr_lamb=0.3, lr=0.05, progress=False,
                                                     **settings), torch.device("cpu"))
    poisoned.set_rng_state({"augment": torch.Generator().manual_seed(1).get_state(),
                            "noise": torch.Generator().manual_seed(2).get_state()})
    terms = [trainer.step(batch) for _, batch in zip(range(STEPS), poisoned.batches(BATCH, 0))]
    trainer.close()
    return {key: value.detach().float() for key, value in model.state_dict().items()}, terms, trainer


def _max_difference(a: dict, b: dict) -> float:
    return max((a[key] - b[key]).abs().max().item() for key in a if a[key].is_floating_point())


@pytest.fixture(scope="module")
def plain(poisoned):
    return steps(poisoned)


@pytest.fixture(scope="module")
def plain_vgg(poisoned):
    return steps(poisoned, "vgg11")


def _initial(model_name: str) -> dict:
    torch.manual_seed(0)
    return models.build(model_name, num_classes=10, width=WIDTH).state_dict()


def test_channels_last_trains_the_same_weights(poisoned, plain):
    weights, terms, trainer = steps(poisoned, channels_last=True)
    assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for key in ("ce", "mmd_s1", "mmd_s2", "mmd_s3"):
        assert terms[0][key].item() == pytest.approx(plain[1][0][key].item(), rel=1e-4)
    assert _max_difference(weights, plain[0]) < 0.1 * _max_difference(plain[0], _initial("wrn16_1"))


def test_amp_runs_the_network_in_bf16_and_the_losses_in_float32(poisoned, plain):
    weights, terms, trainer = steps(poisoned, amp=True)
    seen = {}
    handle = trainer.model.fc.register_forward_hook(lambda m, i, o: seen.setdefault("dtype", o.dtype))
    from inference import autocast

    with autocast(torch.device("cpu"), True):
        trainer.model(torch.rand(2, 3, 32, 32))
    handle.remove()
    assert seen["dtype"] == torch.bfloat16
    first, plain_first = terms[0], plain[1][0]
    assert all(first[key].dtype == torch.float32 for key in ("ce", "mmd_s1", "mmd_s2", "mmd_s3", "loss"))
    for key in ("ce", "mmd_s1", "mmd_s2", "mmd_s3"):  # the same step, to bf16's 8-bit mantissa
        assert first[key].item() == pytest.approx(plain_first[key].item(), rel=0.02)
    assert all(weight.isfinite().all() for weight in weights.values()) and _max_difference(weights, plain[0]) > 0


def test_compile_trains_the_same_weights(poisoned, plain_vgg):
    """VGG-11 (its max-pools agree here: compiled kernels round like the eager ones), for a short compile."""
    weights, terms, trainer = steps(poisoned, "vgg11", compile=True)
    assert trainer.network is not trainer.model  # the steps ran through torch.compile
    assert terms[0]["loss"].item() == pytest.approx(plain_vgg[1][0]["loss"].item(), rel=1e-4)
    assert _max_difference(weights, plain_vgg[0]) < 0.1 * _max_difference(plain_vgg[0], _initial("vgg11"))


def test_the_session_compiles_into_a_cache_of_its_own():
    """A compile cache shared with an earlier session (another CPU kernel setting) once broke the
    compiled backward; tests/conftest.py gives each session its own, which torch's inductor reads."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from tests.conftest import INDUCTOR_CACHE

    assert cache_dir() == INDUCTOR_CACHE and Path(INDUCTOR_CACHE).is_dir()


def test_fp16_amp_scales_the_loss_and_trains_the_same_step(poisoned, plain):
    """--amp --amp_dtype fp16 (V100-era GPUs): the network runs in float16, the losses in float32,
    and the GradScaler multiplies the loss by its scale and divides the gradients by it again, so
    the update is the plain one to fp16's precision; its scale is saved in the resume state and
    restored from it. bf16's trainer has no scaler in its state: its runs resume as before."""
    weights, terms, trainer = steps(poisoned, amp=True, amp_dtype="fp16")
    seen = {}
    handle = trainer.model.fc.register_forward_hook(lambda m, i, o: seen.setdefault("dtype", o.dtype))
    from inference import autocast

    with autocast(torch.device("cpu"), trainer.amp):
        trainer.model(torch.rand(2, 3, 32, 32))
    handle.remove()
    assert seen["dtype"] == torch.float16 and trainer.scaler.is_enabled()
    assert all(terms[0][key].dtype == torch.float32 for key in ("ce", "mmd_s1", "loss"))
    for key in ("ce", "mmd_s1", "mmd_s2", "mmd_s3"):
        assert terms[0][key].item() == pytest.approx(plain[1][0][key].item(), rel=0.01)
    update, plain_update = _max_difference(weights, _initial("wrn16_1")), _max_difference(plain[0], _initial("wrn16_1"))
    assert update == pytest.approx(plain_update, rel=0.05)  # unscaled: not 65,536 times the plain step
    state = trainer.state_dict([])
    assert state["grad_scaler"]["scale"] == trainer.scaler.get_scale() == 2.0 ** 16  # no overflow in one step
    resumed = Trainer(models.build("wrn16_1", num_classes=10, width=WIDTH), poisoned,
                      TrainSettings(batch_size=BATCH, mlmmdr_lamb=0.3, amp=True, amp_dtype="fp16", progress=False),
                      torch.device("cpu"))
    state["grad_scaler"]["scale"] = 1024.0
    resumed.load_state_dict(state)
    assert resumed.scaler.get_scale() == 1024.0
    resumed.close()
    assert "grad_scaler" not in plain[2].state_dict([]) and not plain[2].scaler.is_enabled()


def test_the_amp_dtype_leaves_the_identity_of_runs_recorded_before_it():
    from pipeline.config import RunConfig

    before = RunConfig(data_name="digits").resolve_defaults()
    assert "amp_dtype" not in before.identity()  # every run recorded before the flag keeps its hash
    assert RunConfig(data_name="digits", amp=True, amp_dtype="fp16").resolve_defaults().config_hash() != \
        RunConfig(data_name="digits", amp=True).resolve_defaults().config_hash()
    assert RunConfig(data_name="digits", amp_dtype="fp16").resolve_defaults().config_hash() == before.config_hash()
