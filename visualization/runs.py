"""Reading many runs' result files (evaluation.json, defense_*.json) for cross-run figures."""
import json
from collections import defaultdict
from pathlib import Path

from evaluation.run import find_runs
from utils.errors import UserError

MAKERS = {"evaluation.json": "python evaluate.py --all_runs '{pattern}'",
          "defense_nc.json": "python defend.py --defense nc <each run's flags>",
          "defense_prune.json": "python defend.py --defense prune <each run's flags>"}


def load_results(pattern: str, filename: str = "evaluation.json") -> dict:
    """{(data, model, attack): [result dicts]} of ``filename`` in the runs matched by ``pattern``."""
    runs = find_runs(pattern)
    missing = [run.name for run in runs if not (run / filename).is_file()]
    if filename == "evaluation.json" and missing:
        raise UserError(f"{len(missing)} runs have no {filename} (e.g. {missing[0]}); run "
                        f"{MAKERS[filename].format(pattern=pattern)} first")
    grouped = defaultdict(list)
    for run in runs:
        if (run / filename).is_file():
            result = json.loads((Path(run) / filename).read_text())
            grouped[(result["data_name"], result["model_name"], result["attack_name"])].append(result)
    if not grouped:
        raise UserError(f"none of the runs in '{pattern}' has {filename}; run {MAKERS[filename]} first")
    return dict(grouped)
