"""The train stage: Algorithm 1 on one run, writing its checkpoint, config and metrics."""
import platform

import torch

from attacks.poisoning import PoisonedData
from pipeline.config import RunConfig, inputs_hash
from pipeline.prepare import Prepared, prepare
from pipeline.rundir import FILES, RunDir
from pipeline.stages.registry import register
from regularizers import describe
from training import Trainer
from training.trainer import TrainingDiverged
from utils.errors import UserError
from utils.io import load_checkpoint, save_csv, save_torch


def resolved_config(prepared: Prepared, poisoned: PoisonedData) -> dict:
    """config.json: the flags plus what they resolved to, so a run describes itself."""
    config = prepared.config
    return {**config.to_dict(), "config_hash": config.config_hash(), "inputs_hash": inputs_hash(config),
            "resolved": {"method": config.method, "levels": list(config.levels),
                         "kernel": describe(config.kernel), "device": str(prepared.device),
                         "num_classes": prepared.data.num_classes,
                         "train_size": len(prepared.data.train_y), "test_size": len(prepared.data.test_y),
                         "poisoned": len(poisoned.poison_index), "noise": len(poisoned.noise_index),
                         "training_set_size": len(poisoned), "taps": dict(prepared.model.taps),
                         "attack": prepared.attack.params(),
                         "torch": str(torch.__version__), "python": platform.python_version()}}


def claim(run: RunDir, config: RunConfig) -> None:
    """Make ``run`` the home of ``config``: refuse a directory that holds a run with another
    configuration unless ``overwrite``, and then clear that run's files (its results are another
    model's)."""
    recorded = run.read("config")
    if recorded is None:
        return
    previous = RunConfig.from_dict(recorded).resolve_defaults()
    if previous.config_hash() == config.config_hash():
        return
    if not config.overwrite:
        mine, theirs = config.identity(), previous.identity()
        changed = [key for key in mine if mine[key] != theirs.get(key)]
        shown = ", ".join(f"{key} {theirs.get(key)} → {mine[key]}" for key in changed[:3])
        raise UserError(f"{run.path} holds a run with another configuration ({shown}); pass --overwrite to "
                        f"replace it, or --run_name/--out_dir for a new run")
    for key in FILES:
        run.file(key).unlink(missing_ok=True)


def resumed_history(run: RunDir, config: RunConfig, trainer: Trainer) -> list:
    """With ``--resume``, restore the trainer from the run's resume.pt and return the history so
    far; without it, start from the first epoch."""
    if not config.resume:
        run.file("resume").unlink(missing_ok=True)
        return []
    if not run.has("resume"):
        state = "is complete" if run.has("checkpoint") else "has no finished epoch"
        raise UserError(f"nothing to resume in {run.path}: the run {state}; drop --resume to train it from the start")
    state = load_checkpoint(run.file("resume"))
    if state.get("config_hash") != config.config_hash():
        raise UserError(f"{run.file('resume')} belongs to another configuration; drop --resume to train from the start")
    return trainer.load_state_dict(state)


@register("train", output=lambda run, options: run.file("checkpoint"), record="config",
          help="python main.py with the run's flags")
def train(config: RunConfig, options=None) -> dict:
    """Train one run and write its directory; returns the final metrics (with ``run_dir``)."""
    prepared = prepare(config)
    poisoned = PoisonedData(prepared.data.train_x, prepared.data.train_y, prepared.attack, config.target,
                            config.poison_ratio, config.poison_mode, config.seed, prepared.device,
                            config.augment)
    run = RunDir.of(config)
    claim(run, config)
    run.path.mkdir(parents=True, exist_ok=True)
    config_record = resolved_config(prepared, poisoned)
    run.write("config", config_record)
    run.file("failure").unlink(missing_ok=True)
    trainer = Trainer(prepared.model, poisoned, config.train_settings(), prepared.device)

    def end_of_epoch(rows: list) -> None:
        save_csv(rows, run.file("history"))
        save_torch({**trainer.state_dict(rows), "config_hash": config.config_hash()}, run.file("resume"))

    try:
        history = trainer.fit(prepared.data.test_x, prepared.data.test_y, on_epoch=end_of_epoch,
                              history=resumed_history(run, config, trainer))
    except TrainingDiverged as error:
        run.write("failure", {"error": str(error), "run_name": config.run_name})
        raise
    finally:
        trainer.close()
    final = history[-1]
    metrics = {"ba": final["ba"], "asr": final["asr"], "method": config.method,
               "run_name": config.run_name, "epochs": len(history),
               "train_seconds": round(sum(row["seconds"] for row in history), 3), "history": history}
    run.write("metrics", metrics)
    state = {key: value.detach().cpu() for key, value in prepared.model.state_dict().items()}
    save_torch({"state_dict": state, "config": config_record,
                "metrics": {key: value for key, value in metrics.items() if key != "history"}},
               run.file("checkpoint"))
    run.file("resume").unlink(missing_ok=True)  # complete: nothing left to resume
    return {**metrics, "run_dir": str(run.path)}
