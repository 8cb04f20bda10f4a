"""Reading many runs' evaluation.json for sweep and detection figures."""
import json
from collections import defaultdict
from pathlib import Path

from evaluation.run import find_runs
from utils.errors import UserError


def load_evaluations(pattern: str) -> dict:
    """{(data, model, attack): [evaluation.json dicts]} for the runs matched by ``pattern``."""
    runs = find_runs(pattern)
    missing = [run.name for run in runs if not (run / "evaluation.json").is_file()]
    if missing:
        raise UserError(f"{len(missing)} runs have no evaluation.json (e.g. {missing[0]}); run "
                        f"python evaluate.py --all_runs '{pattern}' first")
    grouped = defaultdict(list)
    for run in runs:
        result = json.loads((Path(run) / "evaluation.json").read_text())
        grouped[(result["data_name"], result["model_name"], result["attack_name"])].append(result)
    return dict(grouped)
