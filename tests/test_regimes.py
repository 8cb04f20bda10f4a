"""Each attack trains in its published regime by default (issue 42): the loss reduction, the batching
and the poisoning mode its authors used, read back from the resolved configuration and its record."""
import json
from pathlib import Path

import pytest

from attacks import REGISTRY
from experiments.adaptive import mlmmdr_on, works
from experiments.grid import Grid
from experiments.records import Runs
from pipeline.config import RunConfig

# (ce_reduction, poison_batching, poison_mode) as each attack's authors trained with it: the paper's
# Algorithm 1 for its own four; the backdoor toolbox's train_on_poisoned_set.py (one CrossEntropyLoss,
# shuffle=True, the poisoned set modified in place) for Qi et al.'s two; Tang et al.'s own code for TaCT
PUBLISHED = {"patched": ("split", "auto", "add"), "blended": ("split", "auto", "add"), "sig": ("split", "auto", "add"),
             "warped": ("split", "auto", "add"), "adaptive_blend": ("pooled", "random", "replace"),
             "adaptive_patch": ("pooled", "random", "replace"), "tact": ("pooled", "random", "add")}
REGIME = ("ce_reduction", "poison_batching", "poison_mode")
RESULTS = Path(__file__).resolve().parent.parent / "results" / "reproduce"


def resolved(**changes) -> RunConfig:
    return RunConfig(data_name="digits", **changes).resolve_defaults().validate()


def test_every_registered_attack_declares_its_regime():
    assert set(PUBLISHED) == set(REGISTRY)


@pytest.mark.parametrize("attack", sorted(PUBLISHED))
def test_an_attack_alone_trains_as_published_and_its_config_says_so(attack):
    config = resolved(attack_name=attack, poison_ratio=0.03)
    assert tuple(getattr(config, key) for key in REGIME) == PUBLISHED[attack]
    assert config.regime == "published"
    recorded = json.loads(json.dumps(config.to_dict()))  # as config.json holds it
    again = RunConfig.from_dict(recorded)
    assert tuple(getattr(again, key) for key in REGIME) == PUBLISHED[attack]
    assert again.regime == "published" and again.config_hash() == config.config_hash()
    header = config.header()
    assert header["regime"] == "published" and tuple(header[key] for key in REGIME) == PUBLISHED[attack]


def test_a_run_name_tells_the_published_regime_from_algorithm_1():
    assert resolved(attack_name="patched").run_name == "digits_vgg11_patched"
    assert resolved(attack_name="adaptive_blend").run_name == "digits_vgg11_adaptive_blend_pooled_replace_random"
    assert resolved(attack_name="tact", poison_ratio=0.03).run_name == "digits_vgg11_tact_pooled_r0.03_random"


def test_mlmmdr_on_an_adaptive_attack_trains_as_algorithm_1_on_the_attacks_poisoning():
    config = resolved(attack_name="adaptive_patch", mlmmdr_lamb=0.3)
    assert (config.ce_reduction, config.poison_batching, config.poison_mode) == ("split", "auto", "replace")
    assert config.regime == "algorithm1"
    assert config.run_name == "digits_vgg11_adaptive_patch_mlmmdr_0.3_all_replace"


def test_a_flag_that_changes_the_regime_makes_it_custom_and_says_which():
    config = resolved(attack_name="tact", poison_ratio=0.03, poison_batching="gather")
    assert config.regime == "custom"
    assert "poison_batching gather" in config.regime_source()
    assert config.run_name.endswith("_gather")
    assert "custom: pooled CE, gather batches, add" in config.describe_regime()


def test_a_paper_attacks_recorded_run_keeps_its_hash():
    """The paper's attacks train as before: their finished runs do not go stale."""
    recorded = json.loads((RESULTS / "fmnist_vgg11_patched_w0.25_n10000" / "config.json").read_text())
    config = RunConfig.from_dict({key: value for key, value in recorded.items() if key not in REGIME})
    config.data_path, config.train_subset = recorded["data_path"], recorded["train_subset"]
    config.resolve_defaults()
    assert config.config_hash() == recorded["config_hash"]


def test_an_adaptive_run_of_the_old_regime_is_another_run():
    """An adaptive attack recorded under Algorithm 1's loss and batching is not the published run."""
    recorded = json.loads((RESULTS / "fmnist_vgg11_tact_w0.25_n10000_r0.003" / "config.json").read_text())
    assert (recorded["ce_reduction"], recorded["poison_batching"]) == ("split", "auto")
    published = RunConfig.from_dict({key: value for key, value in recorded.items()
                                     if key not in REGIME + ("run_name",)}).resolve_defaults()
    assert published.run_name != recorded["run_name"]
    assert published.config_hash() != recorded["config_hash"]


def test_the_grid_compares_attacks_at_one_rate():
    grid = Grid(RunConfig(data_name="digits", seed=0), attacks=("patched", "blended"), lambdas=(0.3,), seeds=(0,),
                second_model=None, kernels=(), compare_pooled=False, erased_attacks=())
    adaptive = grid.studies()["adaptive"]
    mlmmdr_base = sorted((c.attack_name, c.poison_ratio) for c in adaptive
                         if c.attack_name in ("patched", "blended") and c.method == "ML-MMDR")
    assert mlmmdr_base == [("blended", 0.003), ("patched", 0.003)]
    tact = next(c for c in adaptive if c.attack_name == "tact" and c.poison_ratio == 0.003)
    assert tact.regime == "published"
    studies = grid.studies()
    runs = Runs([{"config": c, "studies": [name for name, configs in studies.items() if c in configs],
                  "evaluation": {}, "metrics": None} for c in grid.runs()], grid.lamb)
    found = mlmmdr_on(runs, {"config": tact}, ["patched"])
    assert [r["config"].poison_ratio for r in found] == [0.003]
    at_grid_rate = next(c for c in adaptive if c.attack_name == "tact" and c.poison_ratio == 0.1)
    assert [r["config"].poison_ratio for r in mlmmdr_on(runs, {"config": at_grid_rate}, ["patched"])] == [0.1]


@pytest.mark.parametrize("asr, other, worst, expected", [
    (0.95, 0.1, 0.15, True), (0.95, 0.1, 0.2, True), (0.95, 0.18, 0.95, False),  # one class taken over: failed
    (0.95, 0.45, None, False), (0.95, 0.1, None, True),  # a record before the worst class: the mean decides
    (0.7, 0.0, 0.0, False), (0.95, None, None, True)])
def test_a_source_specific_attack_that_fires_on_other_classes_failed(asr, other, worst, expected):
    metrics = {"asr": asr, **({} if other is None else {"asr_other_classes": other}),
               **({} if worst is None else {"asr_worst_other_class": worst})}
    assert works({"metrics": metrics, "evaluation": {"asr": asr, **metrics}}) is expected
