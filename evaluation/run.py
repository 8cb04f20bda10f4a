"""evaluate.py's library side: evaluate one run, or many, and write the reports."""
import glob
import json
from pathlib import Path

from evaluation.protocol import EvalOptions, detections, distances
from evaluation.report import render, summary_markdown, summary_row
from evaluation.representations import load_trained, test_groups
from utils.config import RunConfig
from utils.errors import UserError
from utils.io import save_csv, save_json, save_text


def evaluate_run(config: RunConfig, options: EvalOptions) -> dict:
    """Distances and detections of one trained run; writes evaluation.json and evaluation.md."""
    prepared, checkpoint = load_trained(config)
    groups = test_groups(prepared)
    correct = (groups.clean_pred == prepared.data.test_y).float().mean().item()
    asr = (groups.triggered_pred == config.target).float().mean().item() if len(groups.triggered_pred) else float("nan")
    result = {"run_name": config.run_name, "method": config.method, "data_name": config.data_name,
              "model_name": config.model_name, "attack_name": config.attack_name, "target": config.target,
              "mlmmdr_lamb": config.mlmmdr_lamb, "mlmmdr_layer": config.mlmmdr_layer, "seed": config.seed,
              "ba": correct, "asr": asr, "options": options.to_dict(),
              "distances": distances(prepared, groups, options),
              "detection": detections(prepared, groups, options)}
    run_dir = Path(config.out_dir) / config.run_name
    save_json(result, run_dir / "evaluation.json")
    save_text(render(result), run_dir / "evaluation.md")
    return result


def find_runs(pattern: str) -> list:
    """Run directories (holding model.pt and config.json) under a directory or matching a glob."""
    root = Path(pattern)
    candidates = [root] + sorted(root.iterdir()) if root.is_dir() else [Path(p) for p in sorted(glob.glob(pattern))]
    runs = [path for path in candidates if (path / "model.pt").is_file() and (path / "config.json").is_file()]
    if not runs:
        raise UserError(f"no trained runs (directories with model.pt and config.json) in '{pattern}'; "
                        f"pass a runs directory such as runs/ or a glob such as 'runs/digits_*'")
    return runs


def config_of(run_dir: Path, overrides: dict) -> RunConfig:
    values = json.loads((run_dir / "config.json").read_text())
    values.update(out_dir=str(run_dir.parent), run_name=run_dir.name, **overrides)
    return RunConfig.from_dict(values).resolve_defaults()


def evaluate_many(pattern: str, options: EvalOptions, overrides: dict, force: bool = False,
                  summary_dir=None) -> list:
    """Evaluate every run matched by ``pattern`` (reusing evaluation.json unless ``force``) and write
    summary.md / summary.csv, one row per run, to ``summary_dir`` (default: the runs' parent)."""
    from tqdm import tqdm

    rows = []
    runs = find_runs(pattern)
    for run_dir in tqdm(runs, desc="evaluating runs", disable=not overrides.get("progress", True)):
        existing = run_dir / "evaluation.json"
        if existing.is_file() and not force:
            result = json.loads(existing.read_text())
        else:
            result = evaluate_run(config_of(run_dir, overrides), options)
        rows.append(summary_row(result))
    out = Path(summary_dir) if summary_dir else runs[0].parent
    save_text(summary_markdown(rows), out / "summary.md")
    save_csv(rows, out / "summary.csv")
    return rows
