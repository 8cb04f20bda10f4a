"""Neural Cleanse and pruning on a small backdoored digits model, and defend.py's CLI."""
import json

import numpy as np
import pytest
import torch

import defend
from defenses import NCOptions, anomaly_index, flagged_classes, neural_cleanse, pruned, pruning_curve
from defenses.repair.neural_cleanse import CostSchedule, NCCheckpoint, initial_thetas, target_ranking
from defenses import clean_sample
from pipeline.prepare import load_trained
from models import tap_modules
from inference import benign_accuracy_and_asr
from pipeline.cli import run_cli
from pipeline.cli import build_run_parser as build_parser, config_from_args

# A CPU budget: too short for the reference's warm-up epochs at cost 0, so the cost starts at
# init_cost. 40 epochs of 4 steps: after 16 every mask is still shrinking (the target's norm ≈ 50,
# a quarter of it in the trigger's corner); by 40 the target's mask has shed what the trigger does
# not need (norm ≤ 10, nearly all of it in the corner).
NC_BUDGET = NCOptions(batch_size=16, epochs=40, steps_per_epoch=4, start_at_init_cost=True)

# Neural Cleanse's known answer (the target flagged, its mask in the trigger's corner) holds for a
# model that has learnt both tasks. The shared tiny run has learnt the backdoor but barely the
# digits (BA ≈ 0.5), and the mask found for it turned on the CPU's float kernels (a corner share of
# 0.25 under AVX-512 kernels, 0.38 under AVX2, where the machine the test was written on gave
# > 0.4). The whole digits training set (1437 images) under the digits schedule's decay (lr ÷ 10
# after epochs 3 and 4 of 6) gives BA ≈ 0.9 and ASR 1 in about 10 s on 2 cores.
WELL_TRAINED = ["--data_name", "digits", "--width", "0.25", "--epochs", "6", "--no_progress"]


@pytest.fixture(scope="module")
def prepared(tiny_run):
    argv, _ = tiny_run
    return load_trained(config_from_args(build_parser("t").parse_args(argv)))


@pytest.fixture(scope="module")
def well_trained(tmp_path_factory):
    """A backdoored digits model that also classifies well (RBT), trained once for this module."""
    import main

    argv = WELL_TRAINED + ["--out_dir", str(tmp_path_factory.mktemp("well_trained"))]
    assert run_cli(main.main, argv) == 0
    return load_trained(config_from_args(build_parser("t").parse_args(argv)))


def test_anomaly_index_of_hand_made_norms():
    norms = [10.0, 11.0, 12.0, 13.0, 2.0]
    # median 11, |x − 11| = 1 0 1 2 9, MAD = 1, consistency constant 1.4826
    assert np.allclose(anomaly_index(norms), np.array([1, 0, 1, 2, 9]) / 1.4826)
    assert flagged_classes(norms) == [4]
    assert flagged_classes([10.0, 11.0, 12.0, 13.0, 30.0]) == []  # large norms are never flagged


@pytest.mark.numerics
def test_neural_cleanse_flags_the_target_and_finds_the_corner(well_trained):
    model, data = well_trained.model, well_trained.data
    learnt = benign_accuracy_and_asr(model, data.test_x, data.test_y, well_trained.attack, 0, "cpu")
    assert learnt["ba"] > 0.85 and learnt["asr"] > 0.95  # the premise: both tasks learnt
    clean = clean_sample(data.train_x, 64, 0)
    result = neural_cleanse(model, clean, 10, NC_BUDGET, seed=0, device="cpu")
    assert 0 in result["flagged"]
    mask = result["mask"][0, 0]
    # the 3×3 patch sits at rows/cols 29–31: the mask's 9 largest pixels all lie in its quadrant (by
    # chance, 1 in 4⁹). How much of the mask falls on the patch itself turns on the CPU's float kernels
    # (> 40% of it in the last 8 rows and columns under AVX-512, 20% under SSE4.1), where it lies does not
    largest = torch.topk(mask.flatten(), 9).indices
    rows, cols = largest // mask.shape[1], largest % mask.shape[1]
    assert bool((rows >= 16).all() and (cols >= 16).all()), (rows.tolist(), cols.tolist())
    assert result["norm"][0] == result["norm"].min()
    assert np.allclose(result["norm"], result["mask"].flatten(1).sum(1).numpy())
    assert target_ranking(result["norm"], 0)["target_l1_rank"] == 1


def test_target_ranking_of_hand_made_norms():
    ranking = target_ranking([12.0, 40.0, 3.0, 50.0, 30.0], target=2)
    # others 12 40 50 30: median 35
    assert ranking == {"target_l1_rank": 1, "classes": 5, "target_l1_ratio_to_median": pytest.approx(3 / 35)}
    assert target_ranking([12.0, 40.0, 3.0, 50.0, 30.0], target=4)["target_l1_rank"] == 3


def test_each_class_starts_from_its_own_seeded_random_point():
    mask, pattern = initial_thetas([2, 5], (3, 8, 8), seed=0)
    alone_mask, alone_pattern = initial_thetas([5], (3, 8, 8), seed=0)
    assert mask.shape == (2, 1, 8, 8) and pattern.shape == (2, 3, 8, 8)
    assert torch.equal(mask[1], alone_mask[0]) and torch.equal(pattern[1], alone_pattern[0])
    assert not torch.equal(mask[0], mask[1])
    unit = torch.tanh(mask) / 2 + 0.5
    assert 0.3 < unit.mean() < 0.7 and unit.min() >= 0 and unit.max() <= 1  # uniform in [0, 1)


def test_cost_starts_at_zero_and_is_set_after_patience_successes():
    """The reference: cost 0; after 5 successful epochs it is set to 1e-3 (counters restart), and
    5 successes later (the reset epoch counts as the first) it is doubled."""
    schedule = CostSchedule(1, NCOptions())
    costs = []
    for epoch in range(9):
        schedule.update(np.array([0]), np.array([1.0]), np.array([100.0 - epoch]))
        costs.append(float(schedule.cost[0]))
    assert costs == [0, 0, 0, 0, 1e-3, 1e-3, 1e-3, 1e-3, 2e-3]
    assert not schedule.lowered[0] and schedule.raised[0]


def test_a_class_that_never_succeeds_keeps_its_last_mask(prepared):
    clean = clean_sample(prepared.data.train_x, 32, 0)
    options = NCOptions(batch_size=16, epochs=2, steps_per_epoch=2)
    options.attack_threshold = 1.01  # unreachable; set after validation, which (rightly) allows at most 1
    result = neural_cleanse(prepared.model, clean, 10, options, seed=0, classes=[3, 4])
    assert not result["found"].any()
    assert (result["mask"].flatten(1).sum(1) > 0).all()  # the last masks, not empty ones
    assert np.allclose(result["norm"], result["mask"].flatten(1).sum(1).numpy())


@pytest.mark.numerics  # the two forward passes batch their convolutions differently (float32)
def test_batched_and_sequential_agree(prepared):
    clean = clean_sample(prepared.data.train_x, 32, 0)
    options = NCOptions(batch_size=16, epochs=3, steps_per_epoch=2)
    batched = neural_cleanse(prepared.model, clean, 10, options, seed=1, classes=[2, 5])
    sequential = neural_cleanse(prepared.model, clean, 10, options, seed=1, classes=[2, 5], sequential=True)
    alone = neural_cleanse(prepared.model, clean, 10, options, seed=1, classes=[5])
    assert torch.allclose(batched["mask"], sequential["mask"], atol=1e-4)
    assert torch.allclose(batched["mask"][1], alone["mask"][0], atol=1e-4)
    assert np.allclose(batched["cost"], sequential["cost"])


class Killed(Exception):
    pass


class RecordingCheckpoint(NCCheckpoint):
    """The real checkpoint, saving after every epoch; it records each save's next epoch and, after
    ``kill_after`` saves, stops the run as a kill would."""

    def __init__(self, path, key, kill_after=None):
        super().__init__(path, key, every_s=0.0)
        self.kill_after, self.next_epochs = kill_after, []

    def save(self, state, *args):
        super().save(state, *args)
        self.next_epochs.append(state["next_epoch"])
        if len(self.next_epochs) == self.kill_after:
            raise Killed


def test_an_interrupted_neural_cleanse_resumes_to_the_same_numbers(prepared, tmp_path):
    clean = clean_sample(prepared.data.train_x, 32, 0)
    options = NCOptions(batch_size=16, epochs=6, steps_per_epoch=2, start_at_init_cost=True)
    whole = neural_cleanse(prepared.model, clean, 10, options, seed=0, classes=[0, 3])
    path = tmp_path / "defense_nc_resume.pt"
    with pytest.raises(Killed):
        neural_cleanse(prepared.model, clean, 10, options, seed=0, classes=[0, 3],
                       checkpoint=RecordingCheckpoint(path, {"run": "a"}, kill_after=3))
    assert all(p.requires_grad for p in prepared.model.parameters())  # the kill left the model as it was
    assert NCCheckpoint(path, {"run": "b"}).load([0, 3], options, 0) is None  # another run's key: start afresh
    assert NCCheckpoint(path, {"run": "a"}).load([0, 3], options, 1) is None  # another seed
    resuming = RecordingCheckpoint(path, {"run": "a"})
    resumed = neural_cleanse(prepared.model, clean, 10, options, seed=0, classes=[0, 3], checkpoint=resuming)
    assert resuming.next_epochs == [4, 5, 6]  # it went on from epoch 3, not from the start
    assert torch.equal(resumed["mask"], whole["mask"]) and torch.equal(resumed["pattern"], whole["pattern"])
    assert np.array_equal(resumed["cost"], whole["cost"]) and np.array_equal(resumed["epochs"], whole["epochs"])
    assert resumed["steps"] == whole["steps"] == 6 * 2


def test_pruning_ratio_zero_reproduces_and_one_zeroes_the_layer(prepared, tiny_run):
    _, run_dir = tiny_run
    model, data = prepared.model, prepared.data
    module = tap_modules(model, ("s3",))["s3"]
    channels = module_output_channels(model, module)
    evaluate = lambda: benign_accuracy_and_asr(model, data.test_x, data.test_y, prepared.attack, 0, "cpu")
    curve = pruning_curve(model, module, torch.arange(channels), evaluate, ratios=[0.0, 1.0])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert curve[0]["ba"] == pytest.approx(metrics["ba"]) and curve[0]["asr"] == pytest.approx(metrics["asr"])
    out = {}
    with pruned(module, torch.arange(channels), channels), torch.no_grad():
        # registered after the pruning hook, this probe sees the pruned output
        probe = module.register_forward_hook(lambda m, i, o: out.__setitem__("o", o))
        model(data.test_x[:4].float() / 255)
        probe.remove()
    assert out["o"].shape[1] == channels and torch.count_nonzero(out["o"]) == 0
    assert curve[1]["pruned"] == channels


def test_pruning_an_input_equals_zeroing_the_convolutions_weights_on_it_and_abs_ranks_by_magnitude(prepared):
    from defenses.repair.pruning import last_convolution, prune_order

    model = prepared.model
    name, conv = last_convolution(model)
    assert isinstance(conv, torch.nn.Conv2d) and name
    images = prepared.data.test_x[:8].float() / 255
    drop = torch.tensor([0, 2])
    with pruned(conv, drop, conv.in_channels, on="input"), torch.no_grad():
        hooked = model(images)
    weight = conv.weight.data.clone()
    conv.weight.data[:, drop] = 0.0
    with torch.no_grad():
        zeroed = model(images)
    conv.weight.data.copy_(weight)
    assert torch.allclose(hooked, zeroed, atol=1e-5)
    triggered, clean = torch.tensor([0.5, -3.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, 2.0, 0.0])
    assert prune_order(triggered, clean, "triggered").tolist() == [3, 2, 0, 1]
    assert prune_order(triggered, clean, "abs").tolist() == [1, 3, 2, 0]
    assert prune_order(triggered, clean, "diff").tolist() == [3, 0, 2, 1]


def test_the_pruning_places_diagnostic_covers_both_places_and_every_ranking(prepared):
    from defenses.repair.pruning import PlacesOptions, RANKINGS, pruning_places

    found = pruning_places(prepared.subject, PlacesOptions(subset=60, step=0.5))
    assert set(found["places"]) == {"s3", "last_conv_input"} and found["subset"] == 60
    assert found["places"]["last_conv_input"]["hook"] == "input"
    assert set(found["curves"]) == {f"{place}/{rank}" for place in found["places"] for rank in RANKINGS}
    for curve in found["curves"].values():
        assert [point["ratio"] for point in curve] == [0.0, 0.5, 1.0]
    # unpruned, every curve measures the same model on the same subset
    assert len({(curve[0]["ba"], curve[0]["asr"]) for curve in found["curves"].values()}) == 1


def module_output_channels(model, module) -> int:
    out = {}
    handle = module.register_forward_hook(lambda m, i, o: out.__setitem__("o", o))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    handle.remove()
    return out["o"].shape[1]


def test_defend_cli_writes_results_and_figures(tiny_run, tmp_path, capsys):
    argv, run_dir = tiny_run
    assert run_cli(defend.main, argv + ["--defense", "prune", "--figure_dir", str(tmp_path)]) == 0
    prune = json.loads((run_dir / "defense_prune.json").read_text())
    assert [p["ratio"] for p in prune["curve"]] == pytest.approx(np.arange(0, 1.0001, 0.05))
    assert (tmp_path / run_dir.name / "prune_curve.png").is_file()
    assert run_cli(defend.main, argv + ["--defense", "nc", "--clean_samples", "32", "--nc_epochs", "2",
                                        "--nc_steps_per_epoch", "2", "--nc_batch_size", "16",
                                        "--figure_dir", str(tmp_path)]) == 0
    nc = json.loads((run_dir / "defense_nc.json").read_text())
    assert len(nc["norms"]) == 10 and len(nc["anomaly_index"]) == 10 and nc["clean_samples"] == 32
    # paper §6.2: the target's rank by l1 norm and its ratio to the others' median, beside the anomaly index
    others = sorted(nc["norms"][1:])
    assert nc["target_l1_rank"] == 1 + sum(v < nc["norms"][0] for v in others)
    assert nc["target_l1_ratio_to_median"] == pytest.approx(nc["norms"][0] / np.median(others))
    assert (tmp_path / run_dir.name / "nc_triggers.png").is_file()
    import visualize
    from visualization.defense_plots import nc_norms_figure, pruning_figure

    assert run_cli(visualize.main, ["--nc", str(run_dir.parent), "--prune", str(run_dir.parent),
                                    "--figure_dir", str(tmp_path)]) == 0
    group = tmp_path / "digits_vgg11_patched"
    assert (group / "nc_norms.png").is_file() and (group / "prune_curves.png").is_file()
    assert [a.get_title() for a in pruning_figure([prune], "t").axes] == ["BA after pruning s3", "ASR after pruning s3"]
    figure = nc_norms_figure([nc], "t")
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["RBT"]


@pytest.mark.parametrize("extra,message", [
    (["--defense", "strip"], "error: --defense must be one of nc, prune, finetune, nad, argd, tune, got 'strip'"),
    (["--defense", "nc", "--nc_epochs", "0"], "error: --nc_epochs must be at least 1, got 0"),
    (["--defense", "nc", "--nc_cost_up", "0.5"], "error: --nc_cost_up must be > 1, got 0.5"),
    (["--defense", "nc", "--clean_samples", "0"], "error: --clean_samples must be at least 1, got 0"),
    (["--defense", "prune", "--prune_rank", "random"], "error: --prune_rank must be one of triggered, diff, abs, got random"),
])
def test_bad_defense_flags(tiny_run, capsys, extra, message):
    argv, _ = tiny_run
    assert run_cli(defend.main, argv + extra) == 2
    assert message in capsys.readouterr().err
