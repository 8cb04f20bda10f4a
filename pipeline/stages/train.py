"""The train stage: Algorithm 1 on one run, writing its checkpoint, config and metrics."""
import os
import platform
import warnings
from contextlib import ExitStack

import torch

from attacks.poisoning import PoisonedData
from inference import collapsed_to, dominant_class
from pipeline.config import RunConfig, inputs_hash
from pipeline.prepare import Prepared, prepare
from pipeline.rundir import RunDir
from pipeline.stages.registry import register
from regularizers import describe, registry as regularizer_registry
from training import Trainer
from training.trainer import TrainingDiverged
from utils import distributed
from utils.errors import ParameterError, UserError, describe_os_error
from utils.io import (UnreadableCheckpoint, load_checkpoint, remove_orphans, remove_path, save_csv, save_torch,
                      state_digest)

# What Trainer.state_dict writes into resume.pt, and the configuration it belongs to
RESUME_KEYS = ("model", "optimizer", "scheduler", "data_rng", "torch_rng", "numpy_rng", "python_rng", "history",
               "config_hash")


def regularizer_source(config) -> str:
    """What the run's latent regulariser is and where it comes from, in words (none for RBT)."""
    if config.mlmmdr_lamb == 0:
        return "none (RBT)"
    return f"{config.regularizer}: {regularizer_registry.entry(config.regularizer).source}"


def resolved_config(prepared: Prepared, poisoned: PoisonedData) -> dict:
    """config.json: the flags plus what they resolved to, so a run describes itself."""
    config = prepared.config
    return {**config.to_dict(), "config_hash": config.config_hash(), "inputs_hash": inputs_hash(config),
            "resolved": {"method": config.method, "regime": config.regime, "regime_source": config.regime_source(),
                         "levels": list(config.levels),
                         "kernel": describe(config.kernel), "regularizer": regularizer_source(config),
                         "device": str(prepared.device),
                         "num_classes": prepared.data.num_classes,
                         "train_size": len(prepared.data.train_y), "test_size": len(prepared.data.test_y),
                         "poisoned": len(poisoned.poison_index), "noise": len(poisoned.noise_index),
                         "cover": len(poisoned.cover_index), "poisoned_batches_gathered": poisoned.gather,
                         "training_set_size": len(poisoned), "taps": dict(prepared.model.taps),
                         "attack": prepared.attack.params(),
                         "torch": str(torch.__version__), "python": platform.python_version(),
                         "threads": torch.get_num_threads(), "world_size": distributed.current().world_size,
                         **gpu_identity(prepared.device)}}


def gpu_identity(device: torch.device) -> dict:
    """{"gpu": its name and UUID} for a CUDA device (nothing for another): "cuda:0" names a different
    card in each job that sees one GPU of its own, so the record says which one it was."""
    if device.type != "cuda":
        return {}
    properties = torch.cuda.get_device_properties(device)
    return {"gpu": {"name": properties.name, "uuid": str(properties.uuid)}}


def claim(run: RunDir, config: RunConfig) -> None:
    """Refuse to train ``config`` where a run with another configuration lives, unless
    ``overwrite``; the old run (and its results, another model's) is replaced when the new one is
    promoted into place."""
    if config.overwrite:  # unread: a damaged config.json is replaced as any other would be
        return
    recorded = run.read("config")
    if recorded is None:
        return
    previous = RunConfig.from_dict(recorded, str(run.file("config"))).resolve_defaults()
    if previous.config_hash() != config.config_hash():
        mine, theirs = config.identity(), previous.identity()
        changed = [key for key in mine if mine[key] != theirs.get(key)]
        shown = ", ".join(f"{key} {theirs.get(key)} → {mine[key]}" for key in changed[:3])
        raise UserError(f"{run.path} holds a run with another configuration ({shown}); pass --overwrite to "
                        f"replace it, or --run_name/--out_dir for a new run")


def refuse_foreign(run: RunDir) -> None:
    """Refuse to train where something other than a run lives: promoting a finished run replaces
    whatever is at its path, so a user's file there, or a directory of files without a run's
    config.json, would be deleted."""
    path = run.path  # a symbolic link is already followed (RunDir.of)
    foreign = (not run.has("config") and any(path.iterdir())) if path.is_dir() else path.exists()
    if foreign:
        raise UserError(f"{path} exists and is not a run directory (no config.json), and training would replace it; "
                        f"move it away, or give another --run_name or --out_dir")


def staging_of(run: RunDir) -> RunDir:
    """Where a run is written while it trains: ``<out_dir>/.<name>.staging``, renamed into place
    when complete, so the run directory never mixes two runs' files."""
    return RunDir(run.path.parent / f".{run.name}.staging")


def promote(staging: RunDir, run: RunDir) -> None:
    """Rename the finished staging directory into place; the run it replaces goes with its results."""
    replaced = run.path.parent / f".{run.name}.replaced"
    remove_path(replaced)
    if run.path.exists() or run.path.is_symlink():
        os.replace(run.path, replaced)
    os.replace(staging.path, run.path)
    remove_path(replaced)


def keep_results(run: RunDir, staging: RunDir, digest: str) -> list:
    """Move the run's stage results into ``staging`` when the model just trained is the one they were
    computed on (its weights' digest equals the recorded one): a checkpoint that was not kept (an
    archive of the records, results/reproduce) is restored by retraining, and its measurements stay.
    A model that differs in any bit leaves them behind, to be measured again; the record of every
    stage attempt's time (stage_runs.json) goes along whatever the model, since that time was spent.
    Returns the names kept."""
    if run.path.is_dir() and run.has("stage_runs") and not staging.has("stage_runs"):
        os.link(run.file("stage_runs"), staging.file("stage_runs"))
    try:
        recorded = run.read("metrics") if run.path.is_dir() else None
    except UserError:  # an unreadable record keeps nothing; the retrained run stands
        recorded = None
    if not recorded or recorded.get("state_sha256") != digest:
        return []
    kept = []
    for path in sorted(run.path.iterdir()):
        if path.is_file() and not (staging.path / path.name).exists():
            os.link(path, staging.path / path.name)  # linked, not moved: the run keeps them until promoted
            kept.append(path.name)
    return kept


def collapsed_class(prepared: Prepared, trainer: Trainer, history: list):
    """The class a model gives most clean test images (more than half, inference.COLLAPSE_SHARE),
    or None. Such a model (a learning rate that blew the weights up without making them infinite)
    has BA ≈ that class's share and an ASR of 1 or 0 that measures nothing; the run is kept but
    said to be collapsed. It reads the last epoch's predictions (a resumed run with no epoch left
    predicts once more)."""
    predictions = trainer.last_clean_predictions
    if predictions is None:
        predictions = prepared.subject.predict(prepared.data.test_x)
    label = collapsed_to(predictions)
    if label is not None:
        warnings.warn(f"the model classifies {100 * dominant_class(predictions)[1]:.0f}% of the clean test images as "
                      f"{label} (last epoch's loss {history[-1]['loss']:.4g}); its ASR measures nothing: train longer, "
                      f"or lower lr={prepared.config.lr:g}")
    return label


def nothing_to_resume(run: RunDir) -> UserError:
    state = "is complete" if run.has("checkpoint") else "has no finished epoch"
    return UserError(f"nothing to resume in {run.path}: the run {state}; drop --resume to train it from the start")


def resumed_history(staging: RunDir, run: RunDir, config: RunConfig, trainer: Trainer) -> list:
    """With ``--resume``, restore the trainer from the staging directory's resume.pt and return the
    history so far; without it, start from the first epoch. Under DDP rank 0 alone decides (from its
    own ``config.resume``), reads the file and sends the state to every rank, so the other ranks
    need not see rank 0's disk (a multi-node run whose out_dir is node-local)."""
    context = distributed.current()

    def load():  # rank 0
        if not config.resume:
            return None
        if not staging.has("resume"):
            raise nothing_to_resume(run)
        try:
            state = load_checkpoint(staging.file("resume"), RESUME_KEYS)
        except UnreadableCheckpoint as error:
            raise UserError(f"cannot resume: {error}; drop --resume to train the run from the start") from None
        if state.get("config_hash") != config.config_hash():
            raise UserError(f"{staging.file('resume')} belongs to another configuration; drop --resume to train "
                            f"from the start")
        check_world_size(state.get("world_size", 1), context.world_size, config, staging.file("resume"))
        return state

    state = context.agree(load)
    if state is None:
        return []
    try:
        return trainer.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as error:
        raise UserError(f"cannot resume from {staging.file('resume')}: it does not fit this run "
                        f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); drop --resume to train the "
                        f"run from the start") from None


def check_world_size(recorded: int, now: int, config: RunConfig, where) -> None:
    """A run resumed on another number of ranks goes on as the same run only when its updates do
    not depend on it: on each side one process, or --sync_bn with --mmd_sync global (BatchNorm and the
    MMD² over the global batch, as one process computes them)."""
    if recorded == now:
        return
    global_batch = config.sync_bn and config.mmd_sync == "global"
    if not all(ranks == 1 or global_batch for ranks in (recorded, now)):
        raise UserError(f"{where} was written by a run on {recorded} rank(s), and this one has {now}; without "
                        f"--sync_bn and --mmd_sync global the result depends on the number of ranks: resume it with "
                        f"{recorded} (torchrun --nproc_per_node {recorded}), or drop --resume to start over")


def resumable(config: RunConfig, world_size: int = 1) -> bool:
    """Whether ``config``'s run was interrupted mid-training with a resume checkpoint of this very
    configuration that can go on on ``world_size`` ranks (what a scheduler resumes instead of starting
    over). A checkpoint of another rank count that the run's result depends on is not resumable: a
    sweep rerun on another number of GPUs starts such a run over instead of failing it."""
    staging = staging_of(RunDir.of(config))
    if not staging.has("resume"):
        return False
    try:
        state = load_checkpoint(staging.file("resume"), RESUME_KEYS)
        if state["config_hash"] != config.config_hash():
            return False
        check_world_size(state.get("world_size", 1), world_size, config, staging.file("resume"))
        return True
    except UserError:  # unreadable (empty, truncated, a foreign or crafted file), or refused on world_size ranks
        return False


def open_staging(run: RunDir, config: RunConfig, stack: ExitStack) -> RunDir:
    """Check the output directory, take the run's lock (held until ``stack`` closes), refuse a run
    of another configuration and prepare the staging directory; returns it."""
    try:
        run.path.parent.mkdir(parents=True, exist_ok=True)
        problem = None if os.access(run.path.parent, os.W_OK | os.X_OK) else "not writable"
    except OSError as error:
        problem = error.strerror or str(error)
    if problem:
        raise ParameterError("out_dir", f"{config.out_dir} cannot hold runs ({problem}); choose a writable directory")
    stack.enter_context(run.locked())
    refuse_foreign(run)
    staging = staging_of(run)
    if not (config.resume and staging.has("resume")):  # resuming continues a run that was already let in
        claim(run, config)
    if not config.resume:
        remove_path(staging.path)
    elif not staging.has("resume"):  # refused before anything is written: no empty staging directory is left
        raise nothing_to_resume(run)
    staging.path.mkdir(parents=True, exist_ok=True)
    remove_orphans(staging.path)
    remove_orphans(run.path)  # under the lock: no writer of this run is in flight
    return staging


@register("train", output=lambda run, options: run.file("checkpoint"), record="config", artifacts=("checkpoint",),
          summary="metrics",
          help="python main.py with the run's flags")
def train(config: RunConfig, options=None) -> dict:
    """Train one run: validate everything, then, holding the run's lock, write it in a staging
    directory (a resume checkpoint after every epoch) and rename that into place when complete.
    Returns the final metrics (with ``run_dir``).

    Under torchrun every rank trains; rank 0 alone takes the lock and writes, and its checks
    (a run of another configuration, nothing to resume) and any failure of its writes (a full
    disk) stop every rank at once (Context.agree)."""
    context = distributed.from_env(config.device)
    if config.batch_size < context.world_size:
        raise ParameterError("batch_size", f"{config.batch_size} is the global batch, split across "
                                           f"{context.world_size} ranks: give at least one image per rank")
    prepared = prepare(config)
    poisoned = PoisonedData(prepared.data.train_x, prepared.data.train_y, prepared.attack, config.target,
                            config.poison_ratio, config.poison_mode, config.seed, prepared.device,
                            config.augment, cover_ratio=config.cover_ratio, batching=config.poison_batching,
                            batch_size=config.batch_size)
    run = RunDir.of(config)
    with ExitStack() as stack:
        context.agree(lambda: open_staging(run, config, stack) and None)  # rank 0 checks and locks for all
        staging = staging_of(run)
        try:
            return _train_in(staging, run, prepared, poisoned, config, context)
        except OSError as error:  # rank 0's write failed (a full disk): keep what resumes, say so in one line
            kept = staging.has("resume")
            if not kept:
                remove_path(staging.path)
            raise UserError(f"{describe_os_error(error)}; " + (
                "the run resumes from its last finished epoch with --resume" if kept else
                "nothing of this run was kept")) from None


def _train_in(staging: RunDir, run: RunDir, prepared: Prepared, poisoned: PoisonedData, config: RunConfig,
              context) -> dict:
    """Train in ``staging`` (the run's lock held) and promote it into ``run``; see :func:`train`."""
    config_record = resolved_config(prepared, poisoned)
    trainer = Trainer(prepared.model, poisoned, config.train_settings(), prepared.device, context)

    def end_of_epoch(rows: list) -> None:  # rank 0 writes; a failure there stops every rank (agree)
        def save() -> None:
            save_csv(rows, staging.file("history"))
            save_torch({**trainer.state_dict(rows), "config_hash": config.config_hash()}, staging.file("resume"))

        context.agree(save)

    try:
        history = resumed_history(staging, run, config, trainer)
        context.agree(lambda: staging.write("config", config_record) and None)
        history = trainer.fit(prepared.data.test_x, prepared.data.test_y, on_epoch=end_of_epoch, history=history)
    except TrainingDiverged as error:
        failure = {"error": str(error), "run_name": config.run_name}

        def mark_failed() -> None:  # the run is marked failed, never reported as a result
            staging.file("resume").unlink(missing_ok=True)
            staging.write("failure", failure)
            promote(staging, run)

        context.agree(mark_failed)
        raise
    finally:
        trainer.close()
    final = history[-1]
    metrics = {"ba": final["ba"], "asr": final["asr"],
               **{key: final[key] for key in ("asr_other_classes", "asr_worst_other_class") if key in final},
               # the steps in which Algorithm 1's MMD term had both groups and acted, over the whole run
               **({"mmd_active_steps": sum(row.get("mmd_active_steps", 0) for row in history)}
                  if config.mlmmdr_lamb > 0 else {}),
               "method": config.method, "regime": config.regime,
               "run_name": config.run_name, "epochs": len(history),
               "train_seconds": round(sum(row["seconds"] for row in history), 3),
               "collapsed_to_class": collapsed_class(prepared, trainer, history), "history": history}
    state = {key: value.detach().cpu() for key, value in prepared.model.state_dict().items()}
    metrics["state_sha256"] = state_digest(state)

    def finish() -> None:
        staging.write("metrics", metrics)
        save_torch({"state_dict": state, "config": config_record,
                    "metrics": {key: value for key, value in metrics.items() if key not in ("history", "state_sha256")}},
                   staging.file("checkpoint"))
        staging.file("resume").unlink(missing_ok=True)  # complete: nothing left to resume
        keep_results(run, staging, metrics["state_sha256"])
        promote(staging, run)

    context.agree(finish)  # the run is in place (or rank 0's failure raised) before any rank returns
    return {**metrics, "run_dir": str(run.path), "rank": context.rank}
