"""The model-defense stages: Neural Cleanse trigger synthesis and neuron pruning (paper §6.2), and the
erasing defenses fine-tuning, NAD and ARGD."""
import copy
from dataclasses import replace
from pathlib import Path

from defenses import (ARGDOptions, FinetuneOptions, NADOptions, NCCheckpoint, NCOptions, PruneOptions, argd,
                      channel_ranking, finetune, nad, reverse_engineer)
from pipeline.config import RunConfig, inputs_hash
from pipeline.prepare import load_trained
from pipeline.rundir import RunDir
from pipeline.stages.registry import register
from utils.errors import ParameterError
from utils.io import load_checkpoint, save_torch


@register("nc", output=lambda run, options: run.file("nc"), options=NCOptions, needs=("train",),
          help="python defend.py --defense nc with the run's flags", record="nc")
def neural_cleanse(config: RunConfig, options: NCOptions) -> dict:
    """Reverse-engineer every class's trigger; writes defense_nc.json and the masks/patterns. An
    interrupted run resumes from defense_nc_resume.pt, which is removed once the result is written."""
    run = RunDir.of(config)
    resume = NCCheckpoint(run.file("nc_resume"), {"inputs_hash": inputs_hash(config, options)})
    found = reverse_engineer(load_trained(config).subject, options, progress=config.progress, checkpoint=resume)
    triggers = {"mask": found.pop("mask"), "pattern": found.pop("pattern")}
    result = {**config.header(options), **found}
    save_torch(triggers, run.file("nc_triggers"))
    run.write("nc", result)
    resume.clear()
    return result


@register("prune", output=lambda run, options: run.file("prune"), options=PruneOptions, needs=("train",),
          help="python defend.py --defense prune with the run's flags", record="prune")
def prune(config: RunConfig, options: PruneOptions) -> dict:
    """BA and ASR as s3's channels are pruned; writes defense_prune.json."""
    result = {**config.header(options), **channel_ranking(load_trained(config).subject, options)}
    RunDir.of(config).write("prune", result)
    return result


# The erasing defenses (beyond the paper; the ARGD README's family): each trains the run's model on
# the defender's clean data and writes defense_<name>.json and the erased model.

def _save_erased(config: RunConfig, name: str, options, prepared, result: dict) -> dict:
    run = RunDir.of(config)
    result = {**config.header(options), **result}
    save_torch({"state_dict": {key: value.detach().cpu() for key, value in prepared.model.state_dict().items()},
                "config": run.read("config"), "defense": name}, run.file(f"{name}_model"))
    run.write(name, result)
    return result


@register("finetune", output=lambda run, options: run.file("finetune"), options=FinetuneOptions, needs=("train",),
          help="python defend.py --defense finetune with the run's flags", record="finetune")
def finetune_stage(config: RunConfig, options: FinetuneOptions, prepared=None) -> dict:
    """Fine-tune all layers on the defender's clean data (``prepared``'s model, in place, when given);
    its model is NAD's and ARGD's default teacher."""
    prepared = prepared or load_trained(config)
    return _save_erased(config, "finetune", options, prepared,
                        finetune(prepared.subject, options, progress=config.progress))


def _teacher_data_matches(recorded: dict, options) -> bool:
    shared = ("defense_ratio", "defense_batch_size", "defense_augment")
    return all(recorded.get("options", {}).get(key) == getattr(options, key) for key in shared)


def _load_teacher(config: RunConfig, options, prepared) -> tuple:
    """(teacher model, where it came from): ``--teacher``, or the run's fine-tuned model, fine-tuned
    first (``--teacher_epochs``, the default learning rate) when the run has none on the same clean data."""
    run = RunDir.of(config)
    if options.teacher:
        path = Path(options.teacher)
        if not path.is_file():
            raise ParameterError("teacher", f"{path} is not a file; give a checkpoint of the run's model or drop "
                                            f"the flag to use the run's fine-tuned model")
        try:
            state = load_checkpoint(path)
        except Exception as exc:
            raise ParameterError("teacher", f"cannot load {path} ({type(exc).__name__}); give a model.pt-style "
                                            f"checkpoint") from None
        source = str(path)
    else:
        recorded = run.read("finetune")
        source = str(run.file("finetune_model"))
        if not (run.has("finetune_model") and recorded and _teacher_data_matches(recorded, options)):
            # fine-tune a copy of the loaded model: the data and the student are already in memory
            tuned = replace(prepared, model=copy.deepcopy(prepared.model))
            finetune_stage(config, FinetuneOptions(epochs=options.teacher_epochs, defense_ratio=options.defense_ratio,
                                                   defense_batch_size=options.defense_batch_size,
                                                   defense_augment=options.defense_augment), tuned)
            return tuned.model, source
        state = load_checkpoint(run.file("finetune_model"))
    teacher = copy.deepcopy(prepared.model)
    try:
        teacher.load_state_dict(state["state_dict"] if isinstance(state, dict) and "state_dict" in state else state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ParameterError("teacher", f"{source} does not fit the run's model ({config.model_name}, width "
                                        f"{config.width:g}): {str(exc).splitlines()[0]}; give a checkpoint of the "
                                        f"same architecture") from None
    return teacher, source


def _distillation_stage(name: str, options_class, defend):
    @register(name, output=lambda run, options: run.file(name), options=options_class, needs=("train",),
              follows=("finetune",), help=f"python defend.py --defense {name} with the run's flags", record=name)
    def compute(config: RunConfig, options) -> dict:
        prepared = load_trained(config)
        teacher, source = _load_teacher(config, options, prepared)
        result = defend(prepared.subject, teacher, options, progress=config.progress)
        return _save_erased(config, name, options, prepared, {**result, "teacher": source})
    compute.__doc__ = f"{defend.__doc__.splitlines()[0]} Writes defense_{name}.json and the erased model."
    return compute


nad_stage = _distillation_stage("nad", NADOptions, nad)
argd_stage = _distillation_stage("argd", ARGDOptions, argd)
