"""The latent regulariser registry (issue 43): each method's loss against a direct formula, the
adversarial term's direction, an exact resume with a discriminator, and MMD unchanged by the registry."""
import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import datasets
import models
from attacks import build as build_attack
from attacks.poisoning import PoisonedData
from pipeline.config import RunConfig
from regularizers import registry
from regularizers.adversarial import AdversarialEmbedding, adversarial_term, discriminator, train_discriminator
from regularizers.wasserstein import MultiLevelSWD, random_directions, sliced_wasserstein, wasserstein1_1d
from training import Trainer, TrainSettings
from utils.distributed import Context
from utils.errors import ParameterError, UserError
from utils.seed import generator

ROOT = Path(__file__).resolve().parents[1]


def test_w1_of_equal_sizes_is_the_mean_gap_of_the_sorted_values():
    x, y = torch.tensor([[3.0], [0.0], [1.0]]), torch.tensor([[2.0], [5.0], [-1.0]])
    # sorted: (0, 1, 3) against (−1, 2, 5): gaps 1, 1, 2
    assert wasserstein1_1d(x, y).item() == pytest.approx(4 / 3)


def test_w1_of_unequal_sizes_integrates_the_two_quantile_functions():
    x, y = torch.tensor([[0.0]]), torch.tensor([[1.0], [3.0]])
    assert wasserstein1_1d(x, y).item() == pytest.approx(0.5 * 1 + 0.5 * 3)
    # an empirical distribution repeated is the same distribution: W1 unchanged
    a, b = torch.randn(5, 4, generator=torch.Generator().manual_seed(1)), torch.randn(3, 4)
    assert torch.allclose(wasserstein1_1d(a, b), wasserstein1_1d(a, torch.cat([b, b])), atol=1e-6)


def test_sliced_wasserstein_is_the_mean_w1_of_the_projections():
    gen = torch.Generator().manual_seed(2)
    pooled, directions = torch.randn(9, 6, generator=gen), random_directions(4, 6, gen)
    projected = pooled @ directions.T
    direct = sum((projected[:4, k].sort().values.repeat_interleave(5)
                  - projected[4:, k].sort().values.repeat_interleave(4)).abs().mean() for k in range(4)) / 4
    assert sliced_wasserstein(pooled, 4, directions).item() == pytest.approx(direct.item(), rel=1e-5)
    assert torch.allclose(directions.norm(dim=1), torch.ones(4))


def _tiny_model():
    torch.manual_seed(0)
    return models.build("vgg11", width=0.125)


def _recorded(model, x):
    feats = {}
    handles = [module.register_forward_hook(lambda m, i, o, level=level: feats.__setitem__(level, o.detach()))
               for level, module in models.tap_modules(model).items()]
    model(x)
    for handle in handles:
        handle.remove()
    return feats


def test_the_swd_regulariser_is_the_sliced_w1_of_each_level_on_directions_from_the_seed():
    model = _tiny_model()
    reg = MultiLevelSWD(model, ("s1", "s3"), projections=3, seed=7)
    x = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    benign, poisoned = torch.zeros(10, dtype=torch.bool), torch.zeros(10, dtype=torch.bool)
    benign[:4], poisoned[6:] = True, True
    model.eval()
    feats = _recorded(model, x)
    total, per_level = reg.loss(benign, poisoned)
    draws = generator(7, "swd-directions")
    for level in ("s1", "s3"):
        pooled = torch.cat([feats[level][:4], feats[level][6:]]).flatten(1)
        expected = sliced_wasserstein(pooled, 4, random_directions(3, pooled.shape[1], draws))
        assert per_level[level].item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx((per_level["s1"] + per_level["s3"]).item() / 2, rel=1e-6)
    reg.remove()


def test_the_adversarial_term_is_minus_the_discriminators_cross_entropy_on_clean_and_poisoned_rows():
    model = _tiny_model()
    reg = AdversarialEmbedding(model, ("s2", "s3"), warmup=0, seed=3)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    model.eval()
    feats = _recorded(model, x)
    for level in ("s2", "s3"):
        reg._discriminator(level, feats[level][0].numel(), "cpu").eval()
    reg.active = True
    clean, poisoned = torch.tensor([1, 1, 0, 1, 0, 0, 0, 0], dtype=torch.bool), torch.zeros(8, dtype=torch.bool)
    poisoned[5:7] = True  # row 7 is neither (a noise or cover row): the term does not read it
    model(x)
    total, per_level = reg.loss(clean, poisoned)
    rows = torch.tensor([0, 1, 3, 5, 6])
    labels = torch.tensor([0, 0, 0, 1, 1])
    for level in ("s2", "s3"):
        direct = F.cross_entropy(reg.discriminators[level](feats[level][rows].flatten(1)), labels)
        assert per_level[level].item() == pytest.approx(direct.item(), rel=1e-5)
    assert total.item() == pytest.approx(-(per_level["s2"] + per_level["s3"]).item() / 2, rel=1e-6)
    reg.remove()


def test_the_adversarial_gradient_moves_the_features_toward_the_discriminators_confusion():
    gen = torch.Generator().manual_seed(0)
    clean, triggered = torch.randn(64, 8, generator=gen), torch.randn(64, 8, generator=gen) + 2.0
    features, labels = torch.cat([clean, triggered]), torch.cat([torch.zeros(64), torch.ones(64)]).long()
    torch.manual_seed(0)
    model_d = discriminator(8)
    accuracy = train_discriminator(model_d, features, labels, 30, 1e-2, 32, torch.Generator().manual_seed(1))
    assert accuracy > 0.95  # separable: D tells them apart
    with torch.no_grad():
        accuracy = (model_d(features).argmax(1) == labels).float().mean().item()
    z, cross_entropies = features.clone(), []
    for _ in range(20):  # small steps down the gradient of the classifier's term, −CE
        z.requires_grad_(True)
        term = adversarial_term(model_d, z, labels)
        cross_entropies.append(-term.item())
        (gradient,) = torch.autograd.grad(term, z)
        z = (z - 0.2 * gradient / gradient.norm(dim=1, keepdim=True).clamp_min(1e-12)).detach()
    with torch.no_grad():
        accuracy_after = (model_d(z).argmax(1) == labels).float().mean().item()
    assert all(later > earlier for earlier, later in zip(cross_entropies, cross_entropies[1:]))
    assert accuracy == 1.0 and accuracy_after < 0.5  # D, fixed, no longer tells them apart


@pytest.fixture(scope="module")
def digits_poisoned():
    data = datasets.build("digits", seed=0)
    return PoisonedData(data.train_x[:300], data.train_y[:300], build_attack("patched"), poison_ratio=0.1,
                        batching="random"), data


def _adv_trainer(poisoned, epochs=3):
    torch.manual_seed(0)
    model = models.build("vgg11", num_classes=10, width=0.125)
    settings = TrainSettings(epochs=epochs, batch_size=64, lr=0.05, milestones=(2,), mlmmdr_lamb=0.5,
                             regularizer="adv_embed", levels=("s2", "s3"), progress=False, seed=4,
                             regularizer_params={"adv_embed_warmup": 1, "adv_embed_d_epochs": 3})
    return Trainer(model, poisoned, settings, torch.device("cpu"))


def test_a_resumed_adversarial_embedding_run_equals_an_uninterrupted_one_and_acts_after_its_warm_up(digits_poisoned):
    poisoned, data = digits_poisoned
    test_x, test_y = data.test_x[:64], data.test_y[:64]
    saved = {}
    whole = _adv_trainer(poisoned)

    def checkpoint(history):  # as the run writes resume.pt: to bytes, read back with weights_only
        if len(history) == 2:
            buffer = io.BytesIO()
            torch.save(whole.state_dict(history), buffer)
            buffer.seek(0)
            saved[2] = torch.load(buffer, weights_only=True)

    history = whole.fit(test_x, test_y, on_epoch=checkpoint)
    # the term acts only after the warm-up (1 epoch here)
    assert history[0]["adv_active_steps"] == 0 and history[1]["adv_active_steps"] > 0
    assert history[0]["adv_s3"] == 0.0 and history[1]["adv_s3"] > 0.0
    uninterrupted = {key: value.clone() for key, value in whole.model.state_dict().items()}
    assert set(saved[2]["regularizer"]["discriminators"]) == {"s2", "s3"}  # trained in epoch 2, in the checkpoint
    whole.close()
    resumed = _adv_trainer(poisoned)
    history = resumed.load_state_dict(saved[2])
    resumed.fit(test_x, test_y, history=history)
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, uninterrupted[key]), key
    resumed.close()


@pytest.mark.filterwarnings("ignore:without --sync_bn")
def test_a_regulariser_without_exact_ddp_refuses_torchrun_in_one_line(digits_poisoned):
    poisoned, _ = digits_poisoned
    with pytest.raises(UserError, match="--regularizer adv_embed does not run under torchrun"):
        Trainer(models.build("vgg11", width=0.125), poisoned,
                TrainSettings(mlmmdr_lamb=0.1, regularizer="adv_embed", progress=False), torch.device("cpu"),
                Context(0, 2))


def test_mmd_through_the_registry_keeps_the_identity_and_name_of_runs_recorded_before_it():
    recorded = sorted((ROOT / "results" / "reproduce").glob("*mlmmdr*/config.json"))
    assert recorded, "results/reproduce holds ML-MMDR runs"
    for path in recorded[:5]:
        values = json.loads(path.read_text())
        config = RunConfig.from_dict(values)
        assert config.regularizer == "mmd" and config.config_hash() == values["config_hash"], path.parent.name
    before = RunConfig(data_name="digits", mlmmdr_lamb=0.3).resolve_defaults()
    explicit = RunConfig(data_name="digits", mlmmdr_lamb=0.3, regularizer="mmd").resolve_defaults()
    assert before.run_name == explicit.run_name == "digits_vgg11_patched_mlmmdr_0.3_all"
    assert "regularizer" not in before.identity() and "regularizer_params" not in before.identity()
    assert before.method == "ML-MMDR"


def test_mmd_from_the_registry_trains_bit_for_bit_as_the_multilevel_mmd_itself(digits_poisoned):
    from regularizers import MultiLevelMMD

    poisoned, _ = digits_poisoned
    results = []
    for made in ("registry", "direct"):
        torch.manual_seed(0)
        model = models.build("vgg11", num_classes=10, width=0.125)
        settings = TrainSettings(batch_size=64, lr=0.05, mlmmdr_lamb=0.3, progress=False)
        trainer = Trainer(model, poisoned, settings, torch.device("cpu"))
        if made == "direct":
            trainer.regularizer.remove()
            trainer.regularizer = MultiLevelMMD(model, ("s1", "s2", "s3"), "gmk2", "mean", "biased")
        assert isinstance(trainer.regularizer, MultiLevelMMD)
        poisoned.set_rng_state({"augment": torch.Generator().manual_seed(1).get_state(),
                                "noise": torch.Generator().manual_seed(2).get_state()})
        terms = [trainer.step(batch) for _, batch in zip(range(2), poisoned.batches(64, 0))]
        trainer.close()
        results.append((model.state_dict(), terms))
    (weights, terms), (direct_weights, direct_terms) = results
    assert all(torch.equal(weights[key], direct_weights[key]) for key in weights)
    assert [t["mmd_s1"].item() for t in terms] == [t["mmd_s1"].item() for t in direct_terms]


def test_other_regularisers_are_named_apart_and_check_their_flags():
    config = RunConfig(data_name="digits", mlmmdr_lamb=10, regularizer="adv_embed", mlmmdr_layer="last",
                       regularizer_params={"adv_embed_warmup": 3}).validate().resolve_defaults()
    assert config.run_name.startswith("digits_vgg11_patched_adv_embed_10_last_reg")
    assert config.method == "SL-AdvEmbed" and config.identity()["regularizer_params"]["adv_embed_d_epochs"] == 100
    swd = RunConfig(data_name="digits", mlmmdr_lamb=0.3, regularizer="wasserstein").resolve_defaults()
    assert swd.run_name == "digits_vgg11_patched_wasserstein_0.3_all" and swd.method == "ML-SWD"
    rbt = RunConfig(data_name="digits", regularizer="adv_embed", regularizer_params={"adv_embed_warmup": 3})
    assert rbt.resolve_defaults().config_hash() == RunConfig(data_name="digits").resolve_defaults().config_hash()
    with pytest.raises(ParameterError) as error:
        RunConfig(data_name="digits", mlmmdr_lamb=1, regularizer="adv_embed",
                  regularizer_params={"adv_embed_warmup": 10}).validate().resolve_defaults()
    assert error.value.parameter == "adv_embed_warmup" and "below --epochs" in error.value.problem
    with pytest.raises(ParameterError):
        registry.check("wasserstein", {"wasserstein_projections": 0})
    with pytest.raises(UserError, match="takes no parameter adv_embed_lr"):
        registry.check("wasserstein", {"adv_embed_lr": 0.1})


def test_the_command_line_names_a_bad_regulariser_in_one_line(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "main.py", "--data_name", "digits", "--regularizer", "simtrojan",
                           "--out_dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1
    assert "adv_embed" in done.stderr and not any(tmp_path.iterdir())
