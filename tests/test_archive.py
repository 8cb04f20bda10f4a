"""The results archive (results/reproduce): a run's JSON records are kept without its checkpoint,
and a grid continued on another machine retrains a run only when a stage still needs its model,
keeping the records when the retrained model is the recorded one bit for bit."""
import torch

from pipeline.config import RunConfig
from pipeline.rundir import RunDir
from pipeline.schedule import Job, run_jobs
from utils.io import state_digest

def _config(tmp_path):
    return RunConfig(data_name="digits", width=0.125, epochs=1, train_subset=100, out_dir=str(tmp_path),
                     progress=False, eval_every=1).resolve_defaults()


def test_state_digest_tells_one_changed_bit():
    state = {"weight": torch.randn(3, 4), "num_batches_tracked": torch.tensor(7), "empty": torch.zeros(0)}
    before = state_digest(state)
    assert state_digest({key: value.clone() for key, value in state.items()}) == before
    state["weight"].view(torch.int32)[0, 0] ^= 1  # the lowest mantissa bit of one weight
    assert state_digest(state) != before


def test_an_archived_run_retrains_only_for_a_stage_that_needs_its_model(tmp_path):
    config = _config(tmp_path)
    run = RunDir.of(config)
    assert set(run_jobs([Job(config, [("train", None)])], progress=False)[config.run_name]) == {"train"}
    recorded = run.read("metrics")["state_sha256"]
    run.write("evaluation", {"kept": True})  # stands for a finished stage's record
    run.file("checkpoint").unlink()           # what the archive drops
    job = Job(config, [("train", None), ("prune", None)])
    assert [name for name, _ in Job(config, [("train", None)]).pending()] == []  # nothing needs the model
    assert [name for name, _ in job.pending()] == ["train", "prune"]
    timings = run_jobs([job], progress=False)[config.run_name]
    assert set(timings) == {"train", "prune"}
    assert run.read("metrics")["state_sha256"] == recorded       # same seed, same machine: the same model
    assert run.read("evaluation") == {"kept": True}               # so the records computed on it stay
    assert run.has("checkpoint") and run.has("prune") and job.pending() == []
    assert set(run.read("stage_seconds")) == {"train", "prune"}  # each stage's time, kept in the run as it ends


def test_a_retrained_model_that_differs_leaves_the_records_behind(tmp_path):
    config = _config(tmp_path)
    run = RunDir.of(config)
    run_jobs([Job(config, [("train", None)])], progress=False)
    metrics = run.read("metrics")
    run.write("metrics", {**metrics, "state_sha256": "0" * 64})  # as if trained elsewhere, to other bits
    run.write("evaluation", {"kept": True})
    first = run.read("stage_runs")["attempts"]
    run.file("checkpoint").unlink()
    run_jobs([Job(config, [("train", None), ("prune", None)])], progress=False)
    assert not run.has("evaluation")  # measured on another model: dropped, to be measured again
    assert run.read("metrics")["state_sha256"] == metrics["state_sha256"]
    # the time the first training took was spent all the same: every attempt stays on record
    assert [a["stage"] for a in run.read("stage_runs")["attempts"]] == ["train", "train", "prune"]
    assert run.read("stage_runs")["attempts"][0] == first[0]
    # each attempt says when it ended (--plan prefers the newest invocation's times); a fresh training is
    # a whole stage, not a resumed one (whose time covers its last epochs only)
    assert len(first[0]["ended"]) == len("2026-12-08T01:02:03") and "resumed" not in first[0]


def test_the_archive_ignores_checkpoints_and_keeps_records():
    import subprocess

    from tests.conftest import ROOT

    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    assert ignored("results/reproduce/run/model.pt") and ignored("results/reproduce/logs/run.train.log")
    assert ignored("results/reproduce/.run.staging/resume.pt")
    assert not ignored("results/reproduce/run/metrics.json") and not ignored("results/reproduce/timings.json")


def test_a_rerun_stage_still_reruns_the_stages_that_follow_it(tmp_path, monkeypatch):
    """pending() is asked again after each stage; a stage that follows one just rerun stays pending
    although its own output is there (fine-tuning rerun with other options reruns NAD and ARGD)."""
    from pipeline.jobs import run_job
    from pipeline.stages import registry

    ran = []

    def stage(name, follows=()):
        def compute(config, options):
            ran.append(name)
            (tmp_path / f"{name}.out").write_text(name)
        registry.STAGES[name] = registry.Stage(name, compute, lambda run, options: tmp_path / f"{name}.out",
                                               follows=follows)

    monkeypatch.setattr(registry, "STAGES", dict(registry.STAGES))
    stage("zz_up")
    stage("zz_down", follows=("zz_up",))
    (tmp_path / "zz_down.out").write_text("computed from the old zz_up")
    job = Job(_config(tmp_path), [("zz_up", None), ("zz_down", None)])
    assert [name for name, _ in job.pending()] == ["zz_up", "zz_down"]
    assert set(run_job(job, tmp_path)) == {"zz_up", "zz_down"} and ran == ["zz_up", "zz_down"]


def test_a_missing_fine_tuned_model_is_restored_before_the_distillation_that_reads_it(tmp_path):
    from defenses import FinetuneOptions

    config = _config(tmp_path)
    run = RunDir.of(config)
    finetune = FinetuneOptions(epochs=1, defense_validation=20)
    run_jobs([Job(config, [("train", None), ("finetune", finetune)])], progress=False)
    for key in ("checkpoint", "finetune_model"):
        run.file(key).unlink()
    stages = [("train", None), ("finetune", finetune), ("nad", None), ("argd", None)]
    assert [name for name, _ in Job(config, stages[:2]).pending()] == []
    # NAD and ARGD read fine-tuning's model (their teacher), which needs the run's model: both are restored first
    assert [name for name, _ in Job(config, stages).pending()] == ["train", "finetune", "nad", "argd"]
    assert [name for name, _ in Job(config, stages[:2] + [("prune", None)]).pending()] == ["train", "prune"]


def test_an_erasing_tuned_on_another_run_waits_for_that_tuning(tmp_path):
    """The grid's tuned arm reads the choice made on its attack's RBT run; a run reached before that
    tuning exists defers those stages (they stay pending for the grid's second pass) instead of failing."""
    from defenses import FinetuneOptions, NADOptions
    from pipeline.jobs import run_job
    from pipeline.stages.registry import ready

    config = _config(tmp_path)
    chooser = tmp_path / "chooser"
    chooser.mkdir()
    finetune = FinetuneOptions(epochs=1, defense_validation=20, tuned_settings=str(chooser))
    nad = NADOptions(epochs=1, defense_validation=20, tuned_settings=str(chooser))
    job = Job(config, [("train", None), ("finetune", finetune), ("nad", nad), ("prune", None)])
    assert set(run_job(job, tmp_path)) == {"train", "prune"}
    assert [name for name, _ in job.pending()] == ["finetune", "nad"]
    assert not ready("finetune", finetune) and ready("finetune", FinetuneOptions())
    (chooser / "defense_tune.json").write_text("{}")
    assert ready("finetune", finetune) and ready("nad", nad)


def test_a_tuned_erasing_is_stale_once_its_tuning_chooses_otherwise(tmp_path):
    """A tuned erasing's inputs_hash holds only the path of the tuning it reads; the choice itself
    is checked against its record, so a tuning recomputed to another lr reruns it."""
    import json

    from defenses import FinetuneOptions
    from pipeline.stages.registry import up_to_date

    config = _config(tmp_path)
    run = RunDir.of(config)
    chooser = tmp_path / "chooser"
    chooser.mkdir()
    tuning = chooser / "defense_tune.json"
    tuning.write_text(json.dumps({"defenses": {"finetune": {"chosen": {"lr": 0.01}}}}))
    finetune = FinetuneOptions(epochs=1, defense_validation=20, tuned_settings=str(chooser))
    run_jobs([Job(config, [("train", None), ("finetune", finetune)])], progress=False)
    assert run.read("finetune")["tuned"]["lr"] == 0.01 and up_to_date("finetune", run, config, finetune)
    tuning.write_text(json.dumps({"defenses": {"finetune": {"chosen": {"lr": 0.003}}}}))
    assert not up_to_date("finetune", run, config, finetune)
    assert [name for name, _ in Job(config, [("train", None), ("finetune", finetune)]).pending()] == ["finetune"]
    tuning.write_text(json.dumps({"defenses": {}}))  # a tuning without fine-tuning's choice: rerun, and fail there
    assert not up_to_date("finetune", run, config, finetune)
