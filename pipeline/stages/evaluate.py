"""The evaluate stage: distances (paper §4) and detections (§6.1) of a trained run."""
from pathlib import Path

from tqdm import tqdm

from evaluation.protocol import EvalOptions, evaluate as evaluate_subject
from evaluation.report import render, summary_markdown, summary_row
from pipeline.config import RunConfig
from pipeline.prepare import load_trained
from pipeline.rundir import RunDir, find_runs
from pipeline.stages.registry import register
from utils.io import save_csv, save_text


@register("evaluate", output=lambda run, options: run.file("evaluation"), options=EvalOptions, needs=("train",),
          help="python evaluate.py with the run's flags", record="evaluation")
def evaluate(config: RunConfig, options: EvalOptions) -> dict:
    """Distances and detections of one trained run; writes evaluation.json and evaluation.md."""
    prepared = load_trained(config)
    result = {**config.header(options), **evaluate_subject(prepared.subject, options)}
    run = RunDir.of(config)
    run.write("evaluation", result)
    save_text(render(result), run.file("evaluation_report"))
    return result


def evaluate_all(pattern: str, options: EvalOptions, overrides: dict, force: bool = False,
                 summary_dir=None) -> list:
    """Evaluate every run matched by ``pattern`` (reusing evaluation.json unless ``force``) and write
    summary.md / summary.csv, one row per run, to ``summary_dir`` (default: the runs' parent)."""
    rows = []
    runs = find_runs(pattern)
    for run in tqdm(runs, desc="evaluating runs", disable=not overrides.get("progress", True)):
        result = None if force else run.read("evaluation")
        if result is None:
            result = evaluate(run.config(**overrides), options)
        rows.append(summary_row(result))
    out = Path(summary_dir) if summary_dir else runs[0].path.parent
    save_text(summary_markdown(rows), out / "summary.md")
    save_csv(rows, out / "summary.csv")
    return rows
