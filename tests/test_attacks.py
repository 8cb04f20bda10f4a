import math

import numpy as np
import pytest
import torch

import attacks
from attacks.make_blended_pattern import make_pattern
from utils.errors import ParameterError, UserError


def test_patched_sets_exactly_the_bottom_right_3x3_to_white():
    x = torch.full((2, 3, 32, 32), 0.25)
    out = attacks.build("patched")(x)
    expected = x.clone()
    expected[:, :, 29:, 29:] = 1.0
    assert torch.equal(out, expected)
    assert torch.equal(x, torch.full((2, 3, 32, 32), 0.25)), "input must not be modified"


def test_blended_mixes_the_shipped_pattern_with_alpha_point_one():
    x = torch.full((1, 3, 32, 32), 0.5)
    out = attacks.build("blended")(x)
    pattern = torch.from_numpy(make_pattern().astype(np.float32) / 255).permute(2, 0, 1)
    assert torch.allclose(out[0], 0.9 * 0.5 + 0.1 * pattern, atol=1e-6)


def test_sig_adds_the_horizontal_sine_and_clips():
    x = torch.full((1, 3, 32, 32), 0.5)
    out = attacks.build("sig")(x)
    for column in (0, 1, 5, 31):
        expected = 0.5 + (20 / 255) * math.sin(2 * math.pi * column * 6 / 32)
        assert torch.allclose(out[0, :, :, column], torch.full((3, 32), expected), atol=1e-6)
    ones = attacks.build("sig")(torch.ones(1, 3, 32, 32))
    assert ones.max() == 1.0 and ones.min() < 1.0  # clipped above, lowered where sin < 0


def test_warped_is_the_identity_when_strength_is_zero():
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = attacks.build("warped", wanet_s=0.0)(x)
    assert torch.allclose(out, x, atol=1e-5)


def test_warped_field_is_seeded_and_moves_pixels():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    a, b = attacks.build("warped", seed=0), attacks.build("warped", seed=0)
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), attacks.build("warped", seed=1)(x))
    assert (a(x) - x).abs().max() > 0.05
    # a constant image has nothing to warp
    assert torch.allclose(a(torch.full((1, 3, 32, 32), 0.3)), torch.full((1, 3, 32, 32), 0.3), atol=1e-6)


def test_warped_noise_mode_differs_from_the_backdoor_warp():
    attack = attacks.build("warped")
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    noisy = attack.noise(x, torch.Generator().manual_seed(0))
    assert noisy.shape == x.shape
    assert (noisy - attack(x)).abs().max() > 1e-3
    assert attack.noise_per_poison == 2.0


def test_unknown_attack_and_parameter_are_clear_errors():
    with pytest.raises(UserError, match="unknown attack 'nope'; choose one of: adaptive_blend, adaptive_patch, blended, patched, sig, tact, warped"):
        attacks.build("nope")
    with pytest.raises(UserError, match="takes no parameter blend_alpha"):
        attacks.build("patched", blend_alpha=0.2)


@pytest.mark.parametrize("name,params,message", [
    ("patched", {"patch_size": 0}, "patch_size must be in [1, 32], got 0"),
    ("blended", {"blend_alpha": 1.5}, "blend_alpha must be in (0, 1], got 1.5"),
    ("sig", {"sig_delta": 0.0}, "sig_delta must be in (0, 1], got 0.0"),
    ("warped", {"wanet_k": 1}, "wanet_k must be in [2, 32], got 1"),
    ("warped", {"wanet_cross_ratio": -1.0}, "wanet_cross_ratio must be ≥ 0, got -1.0"),
])
def test_attack_parameters_are_checked_against_their_declared_domain(name, params, message):
    """The bounds written once on the dataclass field; the error names the parameter (the CLI
    prefixes it with --)."""
    with pytest.raises(ParameterError) as caught:
        attacks.build(name, params)
    assert str(caught.value) == message and caught.value.parameter == next(iter(params))


def test_the_default_blend_pattern_is_recorded_relative_and_found_from_anywhere(tmp_path, monkeypatch):
    """config.json must not hold this machine's absolute path; the pattern loads from any directory."""
    from pipeline.config import RunConfig

    config = RunConfig(data_name="digits", attack_name="blended").resolve_defaults()
    assert config.attack_params["blend_pattern"] == "attacks/assets/blended_pattern.png"
    monkeypatch.chdir(tmp_path)
    pattern = attacks.build("blended").pattern
    assert pattern.shape == (3, 32, 32) and torch.equal(pattern, (torch.from_numpy(make_pattern()).permute(2, 0, 1)
                                                                  .float() / 255))


def test_every_registered_attack_carries_its_display_name():
    """Each attack class names itself for reports; an attack without one is shown by its registry name."""
    import attacks

    assert all(cls.display for cls in attacks.REGISTRY.values())
    assert attacks.display_name("warped") == "WaNet" and attacks.display_name("adaptive_blend") == "Adaptive-Blend"
