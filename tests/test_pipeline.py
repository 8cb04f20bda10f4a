"""The run layer: flags generated from declared parameters, RunDir, the stage registry, the
feature bank and the scheduler that runs each run's missing stages."""
import json
from dataclasses import dataclass

import pytest
import torch

import attacks
from attacks.base import Attack
from defenses import NCOptions
from evaluation.representations import FeatureBank
from inference import extract
from pipeline.cli import build_run_parser, config_from_args, run_cli
from pipeline.config import RunConfig
from pipeline.flags import parse_flags
from pipeline.rundir import FILES, RunDir, find_runs
from pipeline.schedule import Job, run_jobs
from pipeline.stages import STAGES, output_of
from pipeline.prepare import load_trained
from utils.errors import ParameterError
from utils.params import param


@dataclass
class Corner(Attack):
    """A test attack: a grey square of side ``corner_size`` in the top-left corner."""

    corner_size: int = param(2, "side of the grey square", low=1, high=8)
    name = "corner"

    def __call__(self, x):
        out = x.clone()
        out[..., :self.corner_size, :self.corner_size] = 0.5
        return out


def test_a_new_attack_is_one_class_and_one_registry_line(monkeypatch, capsys):
    """Registering the class is all it takes: its flag, validation and run-name part follow."""
    monkeypatch.setitem(attacks.REGISTRY, "corner", Corner)
    monkeypatch.setattr(attacks, "NAMES", tuple(attacks.REGISTRY))
    parser = build_run_parser("t")
    assert "--corner_size" in parser.format_help() and "side of the grey square" in parser.format_help()
    config = config_from_args(parser.parse_args(["--data_name", "digits", "--attack_name", "corner"]))
    assert config.attack_params == {"corner_size": 2} and config.run_name == "digits_vgg11_corner"
    changed = config_from_args(parser.parse_args(["--data_name", "digits", "--attack_name", "corner",
                                                  "--corner_size", "4"]))
    assert changed.run_name.startswith("digits_vgg11_corner_trig") and changed.attack_params == {"corner_size": 4}
    assert run_cli(lambda argv: config_from_args(parser.parse_args(argv)),
                   ["--data_name", "digits", "--attack_name", "corner", "--corner_size", "9"]) == 2
    assert capsys.readouterr().err.strip() == "error: --corner_size must be in [1, 8], got 9"


def test_every_attack_parameter_has_exactly_one_flag():
    flags = [flag for action in build_run_parser("t")._actions for flag in action.option_strings]
    for name in attacks.NAMES:
        for parameter in attacks.param_names(name):
            assert flags.count(f"--{parameter}") == 1, parameter
    assert "seed" not in attacks.param_names("warped")  # the run's seed, not a flag of its own


def test_a_config_written_with_flat_attack_parameters_reads_back_the_same():
    """config.json files written before attack parameters were nested keep their run names."""
    flat = {"data_name": "digits", "attack_name": "blended", "blend_alpha": 0.2, "sig_delta": 0.5}
    config = RunConfig.from_dict(flat).resolve_defaults()
    assert config.attack_params["blend_alpha"] == 0.2 and "sig_delta" not in config.attack_params
    assert config.run_name == RunConfig(data_name="digits", attack_name="blended",
                                        attack_params={"blend_alpha": 0.2}).resolve_defaults().run_name


def test_a_renamed_neural_cleanse_field_keeps_the_inputs_hash_of_finished_runs():
    """start_at_init_cost was start_cost_at_zero (its negation): the hash is the old field's, so a
    finished Neural Cleanse stage stays up to date."""
    from dataclasses import asdict
    from pipeline.config import digest, inputs_hash

    config = RunConfig(data_name="digits").resolve_defaults()
    for start_at_init_cost in (False, True):
        options = NCOptions(start_at_init_cost=start_at_init_cost)
        legacy = asdict(options)
        legacy["start_cost_at_zero"] = not legacy.pop("start_at_init_cost")
        assert inputs_hash(config, options) == digest({"config": config.config_hash(), "options": legacy})
    assert inputs_hash(config, NCOptions()) != inputs_hash(config, NCOptions(start_at_init_cost=True))


def test_option_flags_come_from_the_dataclass_with_their_prefix():
    options = parse_flags(NCOptions, ["--clean_samples", "64", "--nc_epochs", "3", "--nc_start_at_init_cost"],
                          prefix="nc_")
    assert (options.clean_samples, options.epochs, options.start_at_init_cost) == (64, 3, True)
    with pytest.raises(ParameterError) as caught:
        parse_flags(NCOptions, ["--nc_early_stop_threshold", "1.5"], prefix="nc_", source="nc_flags")
    assert str(caught.value) == "nc_flags has --nc_early_stop_threshold must be in (0, 1], got 1.5"
    with pytest.raises(ParameterError, match=r"^nc_flags cannot use '--device cpu' \(unrecognized arguments"):
        parse_flags(NCOptions, ["--device", "cpu"], prefix="nc_", source="nc_flags")


def test_rundir_owns_the_paths(tmp_path):
    config = RunConfig(data_name="digits", out_dir=str(tmp_path)).resolve_defaults()
    run = RunDir.of(config)
    assert run.path == tmp_path / "digits_vgg11_patched" and run.file("nc") == run.path / "defense_nc.json"
    assert run.read("evaluation") is None and not run.trained
    assert run.figure("features", "figs").as_posix() == "figs/digits_vgg11_patched/features.png"
    assert output_of("evaluate", run) == run.path / "evaluation.json"


def test_stage_needs_exist_and_figure_kinds_never_collide():
    """A run named like its group (the RBT run with every default) shares its figure folder, so
    no run figure may have a group figure's name."""
    from pipeline.stages.figures import DetectionFigureOptions, FigureOptions, ScatterOptions

    for stage in STAGES.values():
        assert all(need in STAGES for need in stage.needs + stage.follows), stage.name
    run = RunDir("runs/digits_vgg11_patched")
    run_figures = {output_of(name, run, ScatterOptions() if name == "features" else FigureOptions())
                   for name, s in STAGES.items() if s.scope == "run" and s.options and "figure_dir" in
                   s.options.__dataclass_fields__ and name != "scatter"}  # scatter writes a record, not a figure
    for stage in STAGES.values():  # each artifact a restorable stage declares, and its summary, is a run file
        assert all(key in FILES for key in stage.artifacts + ((stage.summary,) if stage.summary else ())), stage.name
    group_figures = {output_of(name, "digits_vgg11_patched",
                               DetectionFigureOptions() if name == "detection" else FigureOptions())
                     for name, s in STAGES.items() if s.scope == "group"}
    assert len(run_figures) == 3 and len(group_figures) == 5 and not run_figures & group_figures


def test_feature_bank_extracts_each_image_once_and_matches_a_direct_pass(tiny_run):
    argv, _ = tiny_run
    subject = load_trained(config_from_args(build_run_parser("t").parse_args(argv))).subject
    bank = FeatureBank(subject, subject.data.test_x)
    first = bank(torch.tensor([5, 1, 3]))
    again = bank(torch.tensor([3, 5, 7, 1]), )
    triggered = bank(torch.tensor([1]), triggered=True)
    assert bank.extracted == 4 + 1  # images 1, 3, 5, 7 clean; image 1 triggered
    direct = extract(subject.model, subject.data.test_x[[3, 5, 7, 1]], "cpu")
    for level in ("s1", "s2", "s3"):
        assert torch.allclose(again[level], direct[level], atol=1e-5)
        assert torch.equal(first[level][0], again[level][1])
    direct_triggered = extract(subject.model, subject.data.test_x[[1]], "cpu", transform=subject.attack)
    assert torch.allclose(triggered["s3"], direct_triggered["s3"], atol=1e-5)


def test_schedule_runs_missing_stages_in_worker_processes_and_resumes(tmp_path):
    base = RunConfig(data_name="digits", width=0.125, epochs=1, train_subset=100, out_dir=str(tmp_path),
                     progress=False)
    jobs = [Job(base.with_changes(seed=seed), [("train", None)]) for seed in (0, 1)]
    timings = run_jobs(jobs, workers=2, progress=False)
    assert sorted(timings) == ["digits_vgg11_patched_w0.125_n100", "digits_vgg11_patched_w0.125_n100_seed1"]
    assert all(set(stages) == {"train"} for stages in timings.values())
    assert [run.name for run in find_runs(tmp_path)] == sorted(timings)
    assert (tmp_path / "logs" / "digits_vgg11_patched_w0.125_n100.train.log").is_file()
    assert run_jobs(jobs, workers=2, progress=False) == {}  # finished runs are skipped: nothing is submitted
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in sorted(timings)]
    assert metrics[0]["history"][0]["ce"] != metrics[1]["history"][0]["ce"]  # the seeds differ


def test_a_failing_stage_names_the_run_and_its_log(tmp_path):
    from utils.errors import UserError

    config = RunConfig(data_name="digits", out_dir=str(tmp_path), progress=False).resolve_defaults()
    with pytest.raises(UserError, match=r"the evaluate stage of digits_vgg11_patched failed .*no model.pt.*\.log"):
        run_jobs([Job(config, [("evaluate", None)])], progress=False)


def test_every_train_setting_comes_from_the_run_configuration():
    """RunConfig.train_settings names each TrainSettings field: with every training field of the run
    set away from TrainSettings' default, no field may keep its default, so a field renamed on one
    side (or added to TrainSettings and never filled) fails here instead of training with λ = 0."""
    from dataclasses import fields

    from training import TrainSettings

    config = RunConfig(
        data_name="digits", epochs=7, batch_size=33, lr=0.05, milestones=[3, 5], momentum=0.8, weight_decay=1e-3,
        target=3, mlmmdr_lamb=0.25, regularizer="wasserstein", seed=5, mlmmdr_layer="last", kernel="gk1", mlmmdr_reduce="sum", mmd_estimator="unbiased",
        ce_reduction="pooled", amp=True, amp_dtype="fp16", sync_bn=True, mmd_sync="local", channels_last=True,
        compile=True, eval_batch_size=100, eval_every=3, progress=False).resolve_defaults()
    settings, defaults = config.train_settings(), TrainSettings()
    kept = [f.name for f in fields(TrainSettings) if getattr(settings, f.name) == getattr(defaults, f.name)]
    assert not kept, f"TrainSettings fields left at their defaults: {kept}"
    assert settings.levels == ("s3",) and settings.milestones == (3, 5)
    for f in fields(TrainSettings):  # a field of the same name carries the run's value
        if f.name not in ("levels", "milestones"):
            assert getattr(settings, f.name) == getattr(config, f.name), f.name
