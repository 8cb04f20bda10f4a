"""The evaluate stage: distances (paper §4) and detections (§6.1) of a trained run."""
from pathlib import Path

from tqdm import tqdm

from evaluation.protocol import EvalOptions, evaluate as evaluate_subject
from evaluation.report import render, summary_markdown, summary_row
from pipeline.config import RunConfig
from pipeline.prepare import load_trained
from pipeline.rundir import RunDir, find_runs
from pipeline.stages.registry import register, run_stage, up_to_date
from utils.io import atomic_write, save_csv, save_text
from utils.progress import bar_disabled


def holds_result(record: dict) -> bool:
    """Whether an evaluation.json holds a whole evaluation beside its header (what the summary, the
    figures and the report read); one that does not, cut to its header or written by another
    version, is not up to date: --all_runs and the grid evaluate the run again."""
    distances, detection = record.get("distances"), record.get("detection")
    return (all(key in record for key in ("ba", "asr", "options"))
            and isinstance(distances, dict) and {"levels", "aro"} <= distances.keys()
            and isinstance(detection, dict) and "pools" in detection)


@register("evaluate", output=lambda run, options: run.file("evaluation"), options=EvalOptions, needs=("train",),
          help="python evaluate.py with the run's flags", record="evaluation", complete=holds_result)
def evaluate(config: RunConfig, options: EvalOptions) -> dict:
    """Distances and detections of one trained run; writes evaluation.json and evaluation.md."""
    prepared = load_trained(config)
    result = {**config.header(options), **evaluate_subject(prepared.subject, options)}
    run = RunDir.of(config)
    # evaluation.json marks the stage done, so it is written last; if it cannot be, the report goes
    # back to what it was, and the two never describe different evaluations
    report = run.file("evaluation_report")
    previous = report.read_bytes() if report.is_file() else None
    save_text(render(result), report)
    try:
        run.write("evaluation", result)
    except BaseException:
        if previous is None:
            report.unlink(missing_ok=True)
        else:
            atomic_write(report, lambda handle: handle.write(previous))
        raise
    return result


def evaluate_all(pattern: str, options: EvalOptions, overrides: dict, force: bool = False,
                 summary_dir=None) -> tuple:
    """Evaluate every run matched by ``pattern`` and write summary.md / summary.csv, one row per run, to
    ``summary_dir`` (default: the runs' parent); returns (rows, names of the runs evaluated now). A run's
    evaluation.json is reused only when it is up to date, i.e. computed from this configuration and these
    options (its inputs_hash), as for a single run: otherwise a rerun with other options would report the
    old numbers under the new ones. ``force`` recomputes every run anyway."""
    rows, evaluated = [], []
    runs = find_runs(pattern)
    for run in tqdm(runs, desc="evaluating runs", disable=bar_disabled(overrides.get("progress", True))):
        config = run.config(**overrides)
        if force or not up_to_date("evaluate", run, config, options):
            result = run_stage("evaluate", config, options)
            evaluated.append(run.name)
        else:
            result = run.read("evaluation")
        rows.append(summary_row(result))
    out = Path(summary_dir) if summary_dir else runs[0].path.parent
    save_text(summary_markdown(rows), out / "summary.md")
    save_csv(rows, out / "summary.csv")
    return rows, evaluated
