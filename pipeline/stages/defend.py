"""The model-defense stages (paper §6.2): Neural Cleanse trigger synthesis and neuron pruning."""
from defenses import NCOptions, PruneOptions, channel_ranking, reverse_engineer
from pipeline.config import RunConfig
from pipeline.prepare import load_trained
from pipeline.rundir import RunDir
from pipeline.stages.registry import register
from utils.io import save_torch


@register("nc", output=lambda run, options: run.file("nc"), options=NCOptions, needs=("train",),
          help="python defend.py --defense nc with the run's flags", record="nc")
def neural_cleanse(config: RunConfig, options: NCOptions) -> dict:
    """Reverse-engineer every class's trigger; writes defense_nc.json and the masks/patterns."""
    found = reverse_engineer(load_trained(config).subject, options)
    triggers = {"mask": found.pop("mask"), "pattern": found.pop("pattern")}
    result = {**config.header(options), **found}
    run = RunDir.of(config)
    save_torch(triggers, run.file("nc_triggers"))
    run.write("nc", result)
    return result


@register("prune", output=lambda run, options: run.file("prune"), options=PruneOptions, needs=("train",),
          help="python defend.py --defense prune with the run's flags", record="prune")
def prune(config: RunConfig, options: PruneOptions) -> dict:
    """BA and ASR as s3's channels are pruned; writes defense_prune.json."""
    result = {**config.header(options), **channel_ranking(load_trained(config).subject, options)}
    RunDir.of(config).write("prune", result)
    return result
