"""The figure stages: per run (feature scatter, reversed triggers, pruning curve) and per group of
runs of one data/model/attack (λ sweep, detection bars, NC norms, pruning curves); paper Figs. 3–10.

Per-run figures go to ``<figure_dir>/<run name>/<kind>.png``, per-group ones to
``<figure_dir>/<data>_<model>_<attack>/<kind>.png``; no run kind equals a group kind.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from defenses import DEFENSES, ERASERS
from pipeline.config import RunConfig
from pipeline.prepare import load_trained
from pipeline.rundir import RunDir, group_figure
from pipeline.stages.registry import register
from utils.errors import UserError
from utils.io import check_directory
from utils.params import check_params, param
from visualization.common import close, method_label, save_figure
from visualization.defense_plots import erasing_figure, nc_norms_figure, pruning_figure, trigger_grid
from visualization.detection import RULE_TITLES, detection_figure
from visualization.scatter import PROJECTIONS, NothingToPlot, feature_scatter
from visualization.sweep import sweep_figure


@dataclass
class FigureOptions:
    figure_dir: str = param("figures", "where figures are written: figures/<run name>/ and "
                            "figures/<data>_<model>_<attack>/ (default: figures/)")
    pdf: bool = param(False, "also write a PDF of each figure")

    def __post_init__(self):
        check_params(self)
        check_directory(self.figure_dir, "figure_dir")


@dataclass
class ScatterOptions(FigureOptions):
    method: str = param("pca", "2-D projection for the scatter: pca (the authors' code, default) or tsne "
                        "(scikit-learn, seeded)", choices=tuple(PROJECTIONS))
    num_samples: int = param(100, "samples per group in the scatter (the authors' code: 100)", low=2)


@dataclass
class DetectionFigureOptions(FigureOptions):
    lamb: Optional[float] = param(None, "--detection: the λ of the SL-MMDR/ML-MMDR runs to show (default: the "
                                  "largest)", low=0.0, low_open=True, type=float)
    rule: str = param("headline", "--detection: the headline F1 (default: AC and SS by their own rule, SR by the "
                      "max F1 over thresholds, as paper §6.1), the own rule, or the oracle (the best "
                      "labeling/threshold chosen with the ground truth, a diagnostic)", choices=tuple(RULE_TITLES))


def _save(figure, path, options: FigureOptions) -> dict:
    try:
        written = save_figure(figure, path, options.pdf)
    finally:
        close(figure)
    return {"figure": str(path), "written": [str(p) for p in written]}


def _features_kind(options: ScatterOptions) -> str:
    return "features" if options.method == "pca" else f"features_{options.method}"


@register("features", output=lambda run, o: run.figure(_features_kind(o), o.figure_dir), options=ScatterOptions,
          needs=("train",), help="python visualize.py with the run's flags")
def features(config: RunConfig, options: ScatterOptions) -> dict:
    """Benign vs malicious representations at s1 s2 s3, projected to 2-D (Fig. 4)."""
    prepared = load_trained(config)
    try:
        figure, notes = feature_scatter(prepared.subject, options.num_samples, options.method,
                                        label=method_label(config.method, config.mlmmdr_lamb),
                                        title=f"{config.data_name} / {config.model_name} / {config.attack_name}")
    except NothingToPlot as error:  # kept apart: the scatter stage records it instead of failing
        raise NothingToPlot(f"{config.run_name}: {error}") from None
    except UserError as error:
        raise UserError(f"{config.run_name}: {error}") from None
    path = RunDir.of(config).figure(_features_kind(options), options.figure_dir)
    return {**_save(figure, path, options), "notes": notes}


@register("scatter", output=lambda run, o: run.file("scatter"), options=ScatterOptions, needs=("train",),
          help="the reproduction grid's feature scatter: the figure, or why the run has none", record="scatter")
def scatter(config: RunConfig, options: ScatterOptions) -> dict:
    """:func:`features`, recorded in the run (scatter.json): a run with nothing to draw (ASR near 0)
    records why, where the features stage would stop the grid's other stages."""
    try:
        result = {**config.header(options), **features(config, options), "reason": None}
    except NothingToPlot as error:
        result = {**config.header(options), "figure": None, "reason": str(error).removeprefix(f"{config.run_name}: ")}
    RunDir.of(config).write("scatter", result)
    return result


@register("nc_triggers", output=lambda run, o: run.figure("nc_triggers", o.figure_dir), options=FigureOptions,
          needs=("nc",), help="python defend.py --defense nc")
def nc_triggers(config: RunConfig, options: FigureOptions) -> dict:
    """Every class's reversed trigger m⊙p, the target marked (Fig. 9)."""
    run = RunDir.of(config)
    result = run.read("nc")
    triggers = torch.load(run.file("nc_triggers"), map_location="cpu", weights_only=True)
    figure = trigger_grid(triggers["mask"], triggers["pattern"], result["norms"], config.target,
                          f"{config.run_name}: Neural Cleanse reversed triggers m⊙p")
    return _save(figure, run.figure("nc_triggers", options.figure_dir), options)


@register("prune_curve", output=lambda run, o: run.figure("prune_curve", o.figure_dir), options=FigureOptions,
          needs=("prune",), help="python defend.py --defense prune")
def prune_curve(config: RunConfig, options: FigureOptions) -> dict:
    """BA and ASR against the pruned ratio of s3's channels for this run (Fig. 10)."""
    run = RunDir.of(config)
    figure = pruning_figure([run.read("prune")], config.run_name)
    return _save(figure, run.figure("prune_curve", options.figure_dir), options)


def _results(runs: list, key: str, required: bool) -> list:
    results = [run.read(key) for run in runs]
    missing = [run.name for run, result in zip(runs, results) if result is None]
    if required and missing:
        raise UserError(f"{len(missing)} runs have no {runs[0].file(key).name} (e.g. {missing[0]}); run "
                        f"python evaluate.py --all_runs on them first")
    return [result for result in results if result is not None]


def _group_stage(kind: str, need: str, key: str, draw, options=FigureOptions, required: bool = False, help: str = ""):
    """Register the group figure ``kind`` drawn by ``draw(results, title, options)`` from the file
    ``key`` that the stage ``need`` writes in each run."""
    def output(group, o):
        return group_figure(group, _detection_kind(o) if kind == "detection" else kind, o.figure_dir)

    @register(kind, output=output, options=options, needs=(need,), scope="group", help=help)
    def compute(group: str, runs: list, o) -> dict:
        results = _results(runs, key, required)
        if not results:
            return {}
        first = runs[0].config()
        title = f"{first.data_name} / {first.model_name} / {first.attack_name}"
        return _save(draw(results, title, o), output(group, o), o)
    return compute


def _detection_kind(options: DetectionFigureOptions) -> str:
    kind = "detection" if options.rule == "headline" else f"detection_{options.rule}"
    return kind if options.lamb is None else f"{kind}_lambda{options.lamb:g}"


_group_stage("sweep", "evaluate", "evaluation", lambda results, title, o: sweep_figure(results, title), required=True,
             help="BA, ASR and MMD² per level against λ (Fig. 3)")
_group_stage("detection", "evaluate", "evaluation", lambda results, title, o: detection_figure(results, title, o.lamb, o.rule),
             options=DetectionFigureOptions, required=True, help="AC/SS/SR F1 per level (Figs. 5–7)")
_group_stage("nc_norms", "nc", "nc", lambda results, title, o: nc_norms_figure(results, title),
             help="Neural Cleanse mask norms, the target against the others (Fig. 8)")
_group_stage("prune_curves", "prune", "prune", lambda results, title, o: pruning_figure(results, title),
             help="pruning curves of every run of the group (Fig. 10)")


@register("erasing", output=lambda group, o: group_figure(group, "erasing", o.figure_dir), options=FigureOptions,
          needs=ERASERS[:1], scope="group", help="BA and ASR over the epochs of fine-tuning, NAD and ARGD, every "
          "run of the group (RBT against SL-/ML-MMDR)")
def erasing(group: str, runs: list, options: FigureOptions) -> dict:
    """One row per erasing defense that some run of the group has been through."""
    results = {DEFENSES[key].display: _results(runs, key, required=False) for key in ERASERS}
    if not any(results.values()):
        return {}
    first = runs[0].config()
    title = f"{first.data_name} / {first.model_name} / {first.attack_name}: erasing the backdoor"
    return _save(erasing_figure(results, title), group_figure(group, "erasing", options.figure_dir), options)
