"""The reproduction grid: attacks × {RBT, SL-MMDR, ML-MMDR} × λ, trained, evaluated and defended.

Every stage runs the project's own entry scripts in subprocesses (so ``--jobs`` can run several
at once) and is skipped when its output file already exists, so an interrupted reproduction
resumes where it stopped.
"""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from utils.errors import UserError
from utils.options import build_parser, config_from_args

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ("patched", "blended", "sig", "warped")


@dataclass
class Grid:
    base: list                      # flags shared by every run (data, model, width, epochs, seed, out_dir)
    attacks: tuple = ATTACKS
    lambdas: tuple = (0.1, 0.2, 0.3)
    defended_attacks: tuple = ("patched",)
    eval_flags: list = field(default_factory=list)
    nc_flags: list = field(default_factory=list)
    defend_flags: list = field(default_factory=list)  # for both defenses, e.g. --figure_dir

    def runs(self) -> list:
        """[(argv, RunConfig)] for every run of the grid, RBT first for each attack."""
        out = []
        for attack in self.attacks:
            variants = [[]] + [["--mlmmdr_lamb", f"{lamb:g}", "--mlmmdr_layer", layer]
                               for layer in ("last", "all") for lamb in self.lambdas]
            for variant in variants:
                argv = self.base + ["--attack_name", attack] + variant
                out.append((argv, config_from_args(build_parser("grid").parse_args(argv))))
        return out


def _stage_jobs(grid: Grid) -> list:
    """(stage, output file, command) for every job, in dependency order within each run."""
    jobs = []
    for argv, config in grid.runs():
        run_dir = Path(config.out_dir) / config.run_name
        quiet = argv + ["--no_progress"]
        chain = [("train", run_dir / "model.pt", ["main.py"] + quiet),
                 ("evaluate", run_dir / "evaluation.json", ["evaluate.py"] + quiet + grid.eval_flags)]
        if config.attack_name in grid.defended_attacks:
            defend = ["defend.py"] + quiet + grid.defend_flags
            chain += [("nc", run_dir / "defense_nc.json", defend + ["--defense", "nc"] + grid.nc_flags),
                      ("prune", run_dir / "defense_prune.json", defend + ["--defense", "prune"])]
        jobs.append((config.run_name, chain))
    return jobs


def _run_chain(name: str, chain: list, env: dict, log_dir: Path, progress) -> dict:
    timings = {}
    for stage, output, command in chain:
        if output.is_file():
            progress.update(1)
            continue
        started = time.perf_counter()
        log = log_dir / f"{name}.{stage}.log"
        with open(log, "w") as handle:
            code = subprocess.run([sys.executable] + command, cwd=ROOT, env=env, stdout=handle,
                                  stderr=subprocess.STDOUT).returncode
        if code != 0:
            raise UserError(f"{stage} of {name} failed (exit {code}); see {log}")
        timings[stage] = round(time.perf_counter() - started, 1)
        progress.update(1)
    return timings


def run_grid(grid: Grid, jobs: int = 1, log_dir: Path = None) -> dict:
    """Run every missing stage; returns {run name: {stage: seconds}} for the stages it ran."""
    work = _stage_jobs(grid)
    log_dir = Path(log_dir or Path(grid.runs()[0][1].out_dir) / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("MKL_NUM_THREADS", str(threads))
    total = sum(len(chain) for _, chain in work)
    with tqdm(total=total, desc="reproduction stages", dynamic_ncols=True) as progress:
        if jobs == 1:
            return {name: _run_chain(name, chain, env, log_dir, progress) for name, chain in work}
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {name: pool.submit(_run_chain, name, chain, env, log_dir, progress) for name, chain in work}
            return {name: future.result() for name, future in futures.items()}


def collect(grid: Grid) -> list:
    """Every run's config and result files, for the report."""
    records = []
    for _, config in grid.runs():
        run_dir = Path(config.out_dir) / config.run_name
        record = {"config": config, "run_dir": run_dir}
        for key, filename in (("metrics", "metrics.json"), ("evaluation", "evaluation.json"),
                              ("nc", "defense_nc.json"), ("prune", "defense_prune.json")):
            path = run_dir / filename
            record[key] = json.loads(path.read_text()) if path.is_file() else None
        records.append(record)
    return records
