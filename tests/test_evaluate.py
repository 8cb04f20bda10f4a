"""evaluate.py end to end on a tiny digits run, and the protocol's sampling rules."""
import csv
import json

import pytest
import torch

import evaluate
from evaluation.protocol import EvalOptions, distances, pool_counts
from evaluation.representations import PredictedGroups
from inference import extract
from pipeline.prepare import load_trained
from pipeline.cli import run_cli
from pipeline.cli import build_run_parser as build_parser, config_from_args

from tests.conftest import EVAL_SMALL as SMALL


def test_evaluate_writes_complete_json_and_markdown(tiny_run, capsys):
    argv, run_dir = tiny_run
    assert run_cli(evaluate.main, argv + SMALL) == 0
    result = json.loads((run_dir / "evaluation.json").read_text())
    assert result["method"] == "RBT" and 0 <= result["ba"] <= 1 and result["asr"] > 0.5
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert result["ba"] == pytest.approx(metrics["ba"]) and result["asr"] == pytest.approx(metrics["asr"])
    for level in ("s1", "s2", "s3"):
        for metric in ("mmd2", "ed2", "swd1"):
            row = result["distances"]["levels"][level][metric]
            assert all(row[key] is not None for key in ("attack", "intra", "inter"))
        assert 1.0 <= result["distances"]["aro"][level] <= 3.0
    counts = result["distances"]["counts"]
    assert counts["malicious"] <= 60 and counts["benign_half_a"] + counts["benign_half_b"] <= 120
    pool = result["detection"]["pools"][0]
    assert pool["benign"] == pool["malicious"] and pool["benign"] + pool["malicious"] <= 40
    rules = result["detection"]["headline_rules"]
    assert {name: rules[name] for name in ("ac", "ss", "sr")} == {"ac": "own", "ss": "own", "sr": "oracle"}
    assert set(rules) == set(result["detection"]["detectors"]) >= {"spectre", "strip", "scan", "beatrix"}
    for level in ("s1", "s2", "s3"):
        for method in ("ac", "ss", "sr"):
            scores = pool["levels"][level][method]
            assert 0 <= scores["own"] <= scores["oracle"] + 1e-9 <= 1 + 1e-9
            assert scores["headline"] == scores[result["detection"]["headline_rules"][method]]
        ac, ss = pool["levels"][level]["ac"], pool["levels"][level]["ss"]
        # every form is kept, so a report can show the sensitivity to the detector's configuration
        assert set(ac["variants"]) == {"pca10", "ica20"} and ac["reduce"] == "pca"
        assert set(ac["variants"]["ica20"]) == {"clean_reference", "smaller", "relative_size", "oracle"}
        assert ac["own"] == ac["variants"]["pca10"]["clean_reference"]
        assert set(ss["variants"]) == {"centred", "uncentred"} and ss["own"] == ss["variants"]["centred"]["top_scores"]
        # the threshold-free score beside every rule: a scored detector's AUROC, none for AC's clusters
        assert ac["auroc"] is None and all(0.0 <= pool["levels"][level][m]["auroc"] <= 1.0 for m in ("ss", "sr"))
    strip = pool["input_level"]["strip"]
    assert 0.0 <= strip["auroc"] <= 1.0 and isinstance(strip["threshold_below_every_entropy"], bool)
    assert strip["threshold_rule"] == "normal" and strip["own"] == strip["variants"]["normal"]["normal"]
    assert set(strip["variants"]) == {"normal", "empirical"} and set(strip["variants_auroc"]) == {"normal", "empirical"}
    for verdicts in result["detection"]["class_level"].values():
        for verdict in verdicts.values():
            assert 1 <= verdict["target_rank"] <= verdict["n_classes"]
    # the detectors built since 2023 record what they used; their clean images are the defender's
    badexpert = pool["input_level"]["badexpert"]
    assert badexpert["clean_images"] == 300 and badexpert["training_steps"] > 0 and 0 <= badexpert["auroc"] <= 1
    asset = result["detection"]["training_set"]["asset"]
    assert asset["N"] == 660 and asset["poisoned"] == 60 and set(asset["decisions_f1"]) == {"reference", "density"}
    assert asset["base_set"]["per_class"] == 100 and 0 <= asset["auroc"] <= 1
    assert {draw["asked"] for draw in result["detection"]["clean_set"]} >= {100, 300}
    markdown = (run_dir / "evaluation.md").read_text()
    assert "; AUROC " in markdown and "| STRIP | normal | normal |" in markdown and "| target's rank |" in markdown
    assert "| patched (benign vs malicious) |" in markdown and "| intra-class |" in markdown
    assert "| ASSET | 660 (60) |" in markdown
    assert "| inter-class (min) |" in markdown and "| SR | s3 |" in markdown and "N=40, r′=1" in markdown
    assert "BA=" in capsys.readouterr().out


def test_an_evaluation_recorded_before_the_threshold_free_scores_is_stale():
    """The evaluation's inputs_hash holds the version of its record, so an evaluation.json written
    before every detection recorded its AUROC (hashed from the options alone) is computed again."""
    from dataclasses import asdict

    from pipeline.config import RunConfig, digest, inputs_hash

    config, options = RunConfig(), EvalOptions()
    assert inputs_hash(config, options) != digest({"config": config.config_hash(), "options": asdict(options)})
    assert inputs_hash(config, options) == inputs_hash(config, EvalOptions())


def test_all_runs_writes_one_summary_row_per_run(tiny_run, capsys):
    argv, run_dir = tiny_run
    assert run_cli(evaluate.main, ["--all_runs", str(run_dir.parent), "--no_progress"] + SMALL) == 0
    rows = list(csv.DictReader(open(run_dir.parent / "summary.csv")))
    assert [row["run_name"] for row in rows] == [run_dir.name]
    assert {"aro_s1", "mmd2_s3", "f1_sr_s2"} <= set(rows[0])
    assert run_dir.name in (run_dir.parent / "summary.md").read_text()


def test_missing_run_is_a_clear_error(tmp_path, capsys):
    assert run_cli(evaluate.main, ["--data_name", "digits", "--out_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no model.pt in {tmp_path}" in err and "run the 'train' stage first (python main.py" in err
    assert run_cli(evaluate.main, ["--all_runs", str(tmp_path)]) == 2


def test_empty_malicious_group_is_reported_not_fatal(tiny_run):
    argv, _ = tiny_run
    prepared = load_trained(config_from_args(build_parser("t").parse_args(argv)))
    groups = PredictedGroups(clean_pred=prepared.data.test_y.clone(), triggered_pred=torch.ones(10, dtype=torch.long),
                        non_target_index=torch.arange(10), target=0)
    result = distances(prepared.subject, groups, EvalOptions(num_samples=20, swd_projections=10))
    assert result["levels"]["s1"]["mmd2"]["attack"] is None
    assert result["levels"]["s1"]["mmd2"]["intra"] is not None
    assert any("attack row is empty" in note for note in result["notes"])


def test_extract_is_batched_flat_and_in_order(tiny_run):
    argv, _ = tiny_run
    prepared = load_trained(config_from_args(build_parser("t").parse_args(argv)))
    images = prepared.data.test_x[:10]
    whole = extract(prepared.model, images, "cpu", batch_size=10)
    pieces = extract(prepared.model, images, "cpu", batch_size=3)
    assert whole["s1"].shape == (10, 64 * 8 * 8) and whole["s3"].shape == (10, 128 * 2 * 2)
    for level in whole:
        assert torch.allclose(whole[level], pieces[level], atol=1e-5)


def test_sr_reference_comes_from_the_training_set(tiny_run):
    """SR's reference images are clean training images of the target class, disjoint from the test pool."""
    from evaluation.protocol import sr_reference_index

    argv, _ = tiny_run
    prepared = load_trained(config_from_args(build_parser("t").parse_args(argv)))
    index = sr_reference_index(prepared.subject, EvalOptions(sr_reference=30))
    assert len(index) == 30 and (prepared.data.train_y[index] == 0).all()
    test_images = {bytes(image.numpy()) for image in prepared.data.test_x}
    assert not any(bytes(image.numpy()) in test_images for image in prepared.data.train_x[index])


def test_pool_counts_keep_the_ratio_when_short():
    assert pool_counts(100, 1.0, 500, 500) == (50, 50)
    assert pool_counts(100, 0.5, 500, 500) == (67, 33)
    assert pool_counts(100, 1.0, 20, 500) == (20, 20)
    assert pool_counts(500, 0.5, 45, 300) == (45, 22)


@pytest.mark.parametrize("flag,value,message", [
    ("--attack_name", "blended", "--attack_name blended contradicts the run in"),
    ("--target", "3", "--target 3 contradicts the run in"),
    ("--seed", "1", "--seed 1 contradicts the run in"),
])
def test_flags_that_contradict_the_checkpoint_are_refused(tiny_run, capsys, flag, value, message):
    """evaluate.py must measure the run as trained: another trigger, target or seed would overwrite
    its evaluation.json with another experiment's numbers."""
    argv, run_dir = tiny_run
    before = (run_dir / "evaluation.json").read_bytes() if (run_dir / "evaluation.json").is_file() else None
    assert run_cli(evaluate.main, argv + ["--run_name", run_dir.name, flag, value] + SMALL) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "trained with" in err[0]
    after = (run_dir / "evaluation.json").read_bytes() if (run_dir / "evaluation.json").is_file() else None
    assert after == before


def test_evaluate_records_the_runs_own_configuration(tiny_run):
    """Flags outside what defines the model (here --epochs) do not leak into the result: it is
    computed from, and labelled with, the configuration the run was trained with."""
    argv, run_dir = tiny_run
    epochs = argv.index("--epochs") + 1
    other = argv[:epochs] + ["9"] + argv[epochs + 1:]
    assert run_cli(evaluate.main, other + SMALL) == 0
    result = json.loads((run_dir / "evaluation.json").read_text())
    assert result["config_hash"] == json.loads((run_dir / "config.json").read_text())["config_hash"]


def test_all_runs_recomputes_a_run_evaluated_with_other_options(tiny_run, tmp_path, capsys, monkeypatch):
    """--all_runs reuses an evaluation.json only when it was computed with these options (its
    inputs_hash), as a single run's stage would; --force recomputes it anyway."""
    import shutil

    import pipeline.stages.evaluate as stage

    _, run_dir = tiny_run
    out_dir = tmp_path / "runs"
    shutil.copytree(run_dir, out_dir / run_dir.name, ignore=shutil.ignore_patterns("evaluation.*"))
    evaluation, summary = out_dir / run_dir.name / "evaluation.json", out_dir / "summary.csv"

    def all_runs(*flags) -> tuple:
        assert run_cli(evaluate.main, ["--all_runs", str(out_dir), "--no_progress", *flags]) == 0
        printed = capsys.readouterr().out
        return printed, evaluation.read_bytes(), json.loads(evaluation.read_text())["inputs_hash"], summary.read_bytes()

    cheap = ["--pool_sizes", "20", "--pool_ratios", "1.0", "--swd_projections", "5", "--sr_reference", "20"]
    printed, first, first_hash, first_summary = all_runs(*cheap, "--num_samples", "30")
    assert printed.startswith("evaluated 1 of 1 runs (0 up to date")
    printed, again, again_hash, again_summary = all_runs(*cheap, "--num_samples", "30")
    assert printed.startswith("evaluated 0 of 1 runs (1 up to date")
    assert (again, again_hash, again_summary) == (first, first_hash, first_summary)
    other = [*cheap, "--num_samples", "20", "--ac_components", "2"]  # the rerun
    printed, changed, changed_hash, changed_summary = all_runs(*other)
    assert printed.startswith("evaluated 1 of 1 runs (0 up to date")
    assert changed_hash != first_hash and changed != first and changed_summary != first_summary
    computed = []  # --force recomputes an up-to-date run: seen through the stage call, without its cost
    monkeypatch.setattr(stage, "run_stage", lambda name, config, options: computed.append((name, config.run_name))
                        or json.loads(evaluation.read_text()))
    printed, *_ = all_runs(*other)
    assert printed.startswith("evaluated 0 of 1 runs") and computed == []
    printed, *_ = all_runs(*other, "--force")
    assert printed.startswith("evaluated 1 of 1 runs") and computed == [("evaluate", run_dir.name)]


def test_all_runs_evaluates_again_a_run_whose_evaluation_json_holds_only_its_header(tiny_run, tmp_path, capsys):
    """An evaluation.json cut to its header parses, and its inputs_hash is current, but it holds no
    evaluation: --all_runs evaluates the run again, as it does one evaluated with other options (it
    was a KeyError traceback from the summary), and writes what a first evaluation writes."""
    import shutil

    _, run_dir = tiny_run
    out_dir = tmp_path / "runs"
    shutil.copytree(run_dir, out_dir / run_dir.name, ignore=shutil.ignore_patterns("evaluation.*"))
    evaluation, summary = out_dir / run_dir.name / "evaluation.json", out_dir / "summary.csv"
    cheap = ["--num_samples", "20", "--pool_sizes", "20", "--pool_ratios", "1.0", "--swd_projections", "5",
             "--sr_reference", "20", "--strip_n", "5", "--strip_overlay_pool", "20", "--strip_fit_samples", "20",
             "--class_samples", "100", "--clean_reserve", "100"]
    argv = ["--all_runs", str(out_dir), "--no_progress", *cheap]

    def without_timings(result: dict) -> dict:
        return {**result, "detection": {k: v for k, v in result["detection"].items() if k != "seconds"}}

    assert run_cli(evaluate.main, argv) == 0
    whole, first_summary = json.loads(evaluation.read_text()), summary.read_bytes()
    keys = list(whole)
    header = {key: whole[key] for key in keys[:keys.index("inputs_hash") + 1]}
    assert "ba" not in header and "distances" not in header
    capsys.readouterr()
    evaluation.write_text(json.dumps(header, indent=2) + "\n")
    assert run_cli(evaluate.main, argv) == 0
    assert capsys.readouterr().out.startswith("evaluated 1 of 1 runs (0 up to date")
    assert without_timings(json.loads(evaluation.read_text())) == without_timings(whole)
    assert summary.read_bytes() == first_summary
    assert run_cli(evaluate.main, argv) == 0  # and, whole again, it is up to date
    assert capsys.readouterr().out.startswith("evaluated 0 of 1 runs (1 up to date")
    evaluation.write_text("{oops")  # not JSON at all (a merge conflict, a hand edit): refused, and the advice works
    assert run_cli(evaluate.main, argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {evaluation} is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
        f"(char 1)); delete it, or write it anew with python evaluate.py and the run's flags (evaluate.py --all_runs "
        f"--force re-evaluates every run)")
    assert run_cli(evaluate.main, argv + ["--force"]) == 0
    assert without_timings(json.loads(evaluation.read_text())) == without_timings(whole)


def test_a_stage_on_a_run_computes_in_channels_last_when_asked(tiny_run):
    """--channels_last is an execution setting of every stage on a trained run, not of training
    alone: the weights are channels-last and the logits those of the NCHW model up to rounding."""
    from pipeline.rundir import RunDir

    _, run_dir = tiny_run
    plain = load_trained(RunDir(run_dir).config())
    fast = load_trained(RunDir(run_dir).config(channels_last=True))
    conv = next(m for m in fast.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    images = plain.data.test_x[:64].float() / 255.0
    with torch.no_grad():
        assert torch.allclose(fast.model(images), plain.model(images), atol=1e-4)
