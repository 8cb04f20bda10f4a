"""The model-defense stages: Neural Cleanse trigger synthesis and neuron pruning (paper §6.2), and the
erasing defenses fine-tuning, NAD and ARGD."""
import copy
import json
from dataclasses import replace
from pathlib import Path

from defenses import (ARGDOptions, FinetuneOptions, NADOptions, NCCheckpoint, NCOptions, PruneOptions, argd,
                      channel_ranking, finetune, nad, reverse_engineer)
from defenses.defender import share_record
from defenses.erasing.train import DEFENDER_FIELDS, defender_data, measure
from defenses.repair.pruning import PlacesOptions, pruning_places
from defenses.erasing.tuning import TuneOptions, regime, scaled, tolerance_images, tune_defense
from pipeline.config import RunConfig, inputs_hash
from pipeline.prepare import load_trained
from pipeline.rundir import FILES, RunDir
from pipeline.stages.registry import register
from utils.errors import ParameterError, UserError
from utils.io import UnreadableCheckpoint, fit_weights, load_checkpoint, save_torch


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


@register("prune_places", output=lambda run, options: run.file("prune_places"), options=PlacesOptions,
          needs=("train",), help="the report's C8 diagnostic (defenses.repair.pruning.pruning_places)", record="prune_places")
def prune_places(config: RunConfig, options: PlacesOptions) -> dict:
    """Pruning curves at s3 and at the last convolution's input under every ranking, on a test subset;
    writes defense_prune_places.json."""
    result = {**config.header(options), **pruning_places(load_trained(config).subject, options)}
    RunDir.of(config).write("prune_places", result)
    return result


# The erasing defenses (beyond the paper; the ARGD README's family): each trains the run's model on
# the defender's clean data and writes defense_<name>.json and the erased model.

UNTUNED = "none: the options' own settings (the references' unless --*_lr_scale or --*_beta_scale)"


def erasing_regime(options, result: dict) -> dict:
    """What an erasing's record says about its regime: the defender's share (what --defense_ratio
    is a share of, so the 5% arm and the sensitivity arm tell apart) and, when its settings were
    tuned, the regime of that tuning as its defense_tune.json states it (its name, rule, tolerance
    on exact counts and search; None for a tuning written before it stated one)."""
    defender, tuned_with = result.get("defender") or {}, result.get("tuned")
    return {"defender_share": share_record(options.defense_ratio, defender),
            "tuning": UNTUNED if not tuned_with else tuned_with.get("regime")}


def _save_erased(config: RunConfig, name: str, options, prepared, result: dict) -> dict:
    run = RunDir.of(config)
    regime, tuned_with = erasing_regime(options, result), result.get("tuned")
    if tuned_with:  # the tuning's regime is recorded once, in erasing_regime; ``tuned`` names it
        result = {**result, "tuned": {**tuned_with, "regime": (tuned_with.get("regime") or {}).get("name")}}
    result = {**config.header(options), **result, "erasing_regime": regime}
    save_torch({"state_dict": {key: value.detach().cpu() for key, value in prepared.model.state_dict().items()},
                "config": run.read("config"), "defense": name}, run.file(f"{name}_model"))
    run.write(name, result)
    return result


def _tuning_file(options) -> Path:
    """The defense_tune.json ``--tuned_settings`` names: the file, or the one in the run directory."""
    path = Path(options.tuned_settings)
    return path / FILES["tune"] if path.is_dir() else path


def tuned(options, name: str) -> tuple:
    """(``options`` with the starting lr and β multiplier a tuning chose for defense ``name``, what
    was applied), or (``options``, None) without ``--tuned_settings``."""
    if not options.tuned_settings:
        return options, None
    path = _tuning_file(options)
    try:
        tuning = json.loads(path.read_text())
        chosen = tuning["defenses"][name]["chosen"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ParameterError("tuned_settings", f"{path} holds no tuning of {name} ({type(exc).__name__}); run "
                                               f"'python defend.py --defense tune' on that run first") from None
    found = tuning.get("erasing_regime")
    return scaled(options, chosen["lr"], chosen.get("beta_scale")), {"from": str(path), **{
        key: chosen[key] for key in ("lr", "beta_scale", "validation_accuracy", "validation_correct") if key in chosen},
        "regime": found if isinstance(found, dict) else None}


def _tuning_chosen(options) -> bool:
    """Whether the tuning an erasing's ``--tuned_settings`` names is on disk (the grid's tuned arm
    reads it from another run), or it names none."""
    return not options.tuned_settings or _tuning_file(options).is_file()


def _still_chosen(name: str):
    """``Stage.agrees`` for a tuned erasing: whether the lr and β multiplier its record applied are
    those its ``--tuned_settings`` file chooses now. Its inputs_hash holds only that file's path, so
    a tuning recomputed to another choice would otherwise leave it looking up to date. True without
    ``--tuned_settings`` or while the file is not there (the stage then waits: ``_tuning_chosen``)."""
    def agrees(recorded: dict, options) -> bool:
        if not options.tuned_settings or not _tuning_file(options).is_file():
            return True
        try:
            _, chosen = tuned(options, name)
        except ParameterError:
            return False
        applied = recorded.get("tuned") or {}
        return all(applied.get(key) == chosen.get(key) for key in ("lr", "beta_scale"))
    return agrees


@register("finetune", output=lambda run, options: run.file("finetune"), options=FinetuneOptions, needs=("train",),
          help="python defend.py --defense finetune with the run's flags", record="finetune",
          artifacts=("finetune_model",), ready=_tuning_chosen, agrees=_still_chosen("finetune"))
def finetune_stage(config: RunConfig, options: FinetuneOptions, prepared=None) -> dict:
    """Fine-tune all layers on the defender's clean data (``prepared``'s model, in place, when given);
    its model is NAD's and ARGD's default teacher."""
    applied, settings = tuned(options, "finetune")
    prepared = prepared or load_trained(config)
    result = finetune(prepared.subject, applied, progress=config.progress)
    return _save_erased(config, "finetune", options, prepared, {**result, "tuned": settings})


def _teacher_data_matches(recorded: dict, options) -> bool:
    """Whether a recorded fine-tuning used the same defender data and the same tuning choice."""
    return all(recorded.get("options", {}).get(key) == getattr(options, key)
               for key in (*DEFENDER_FIELDS, "tuned_settings"))


def _checkpoint_teacher(config: RunConfig, options, prepared) -> tuple:
    """(the teacher from ``--teacher``'s checkpoint, its path)."""
    path = Path(options.teacher)
    if not path.is_file():
        raise ParameterError("teacher", f"{path} is not a file; give a checkpoint of the run's model or drop "
                                        f"the flag to use the run's fine-tuned model")
    teacher = copy.deepcopy(prepared.model)
    try:
        state = load_checkpoint(path)
    except UnreadableCheckpoint as error:
        raise ParameterError("teacher", f"{error}; give a model.pt-style checkpoint") from None
    try:
        fit_weights(teacher, state.get("state_dict", state), path, _the_runs_model(config))
    except UnreadableCheckpoint as error:
        raise ParameterError("teacher", f"{error}; give a checkpoint of the same architecture") from None
    return teacher, str(path)


def _the_runs_model(config: RunConfig) -> str:
    return f"the run's model ({config.model_name}, width {config.width:g})"


def _load_teacher(config: RunConfig, options, prepared) -> tuple:
    """(teacher model, where it came from): ``--teacher``, or the run's fine-tuned model, fine-tuned
    first (``--teacher_epochs``, fine-tuning's schedule at the distillation's ``lr_scale``, or its
    tuned settings with ``--tuned_settings``) when the run has none on the same clean data."""
    if options.teacher:
        return _checkpoint_teacher(config, options, prepared)
    run = RunDir.of(config)
    recorded = run.read("finetune")
    source = str(run.file("finetune_model"))
    if run.has("finetune_model") and recorded and _teacher_data_matches(recorded, options):
        teacher = copy.deepcopy(prepared.model)
        try:  # a file cut short, written by another version, or of another width
            fit_weights(teacher, load_checkpoint(run.file("finetune_model"), keys=("state_dict",))["state_dict"],
                        source, _the_runs_model(config))
        except UnreadableCheckpoint as error:
            raise UserError(f"{error}; delete it and run the same command again, which fine-tunes the teacher "
                            f"anew (or give --teacher)") from None
        return teacher, source
    # fine-tune a copy of the loaded model: the data and the student are already in memory
    tuned_copy = replace(prepared, model=copy.deepcopy(prepared.model))
    finetune_stage(config, FinetuneOptions(epochs=options.teacher_epochs, tuned_settings=options.tuned_settings,
                                           lr_scale=options.lr_scale, **options.defender()), tuned_copy)
    return tuned_copy.model, source


def _distillation_stage(name: str, options_class, defend):
    @register(name, output=lambda run, options: run.file(name), options=options_class, needs=("train",),
              follows=("finetune",), help=f"python defend.py --defense {name} with the run's flags", record=name,
              ready=_tuning_chosen, agrees=_still_chosen(name))
    def compute(config: RunConfig, options) -> dict:
        applied, settings = tuned(options, name)  # a bad --tuned_settings fails before any teacher is trained
        prepared = load_trained(config)
        teacher, source = _load_teacher(config, options, prepared)
        teacher_scores = measure(replace(prepared.subject, model=teacher),
                                 defender_data(prepared.data, options, config.seed))
        result = defend(prepared.subject, teacher, applied, progress=config.progress)
        return _save_erased(config, name, options, prepared,
                            {**result, "tuned": settings, "teacher": {"source": source, **teacher_scores}})
    compute.__doc__ = f"{defend.__doc__.splitlines()[0]} Writes defense_{name}.json and the erased model."
    return compute


nad_stage = _distillation_stage("nad", NADOptions, nad)
argd_stage = _distillation_stage("argd", ARGDOptions, argd)


@register("tune", output=lambda run, options: run.file("tune"), options=TuneOptions, needs=("train",),
          help="python defend.py --defense tune with the run's flags", record="tune")
def tune_stage(config: RunConfig, options: TuneOptions) -> dict:
    """Choose each erasing defense's starting lr and β multiplier on this model's defender's
    validation set (defenses/erasing/tuning.py: exact counts of correct validation images within
    the tolerance, then the strongest, the largest lr and then the largest β); writes
    defense_tune.json with its ``erasing_regime`` (tolerance, rule, defender's share, search), each
    candidate run and its validation count, the choice, and the test BA/ASR of the chosen setting
    on this model (read only after the choice)."""
    prepared = load_trained(config)
    subject = prepared.subject
    data = defender_data(prepared.data, options, config.seed)
    before = measure(subject, data)
    allowed = tolerance_images(options.tolerance, len(data.validation_labels))
    shared = {"before_correct": before["validation_correct"], "tolerance": allowed, "data": data,
              "search": options.search, "progress": config.progress}
    defenses = {}
    base = FinetuneOptions(**options.defender())
    found = tune_defense(subject, finetune, base, [(lr, None) for lr in options.finetune_lrs], **shared)
    teacher = found.pop("chosen_model")
    defenses["finetune"] = {**found, "test_after": measure(replace(subject, model=teacher), data)}
    grid = [(lr, beta) for lr in options.lrs for beta in options.beta_scales]
    for name, defend, options_class in (("nad", nad, NADOptions), ("argd", argd, ARGDOptions)):
        found = tune_defense(subject, defend, options_class(**options.defender()), grid, teacher=teacher, **shared)
        chosen_model = found.pop("chosen_model")
        defenses[name] = {**found, "test_after": measure(replace(subject, model=chosen_model), data)}
    defender = data.record()
    result = {**config.header(options), "erasing_regime": regime(options, defender, allowed), "defender": defender,
              "before": before, "defenses": defenses}
    RunDir.of(config).write("tune", result)
    return result
