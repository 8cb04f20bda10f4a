"""Run what is missing: for each run, for each stage whose output does not exist yet, run it.

Stages of one run run in order (a stage's needs come before it); different runs may run at once
as submitit jobs, locally or on Slurm (pipeline/executors.py). A stage's output is written
atomically and training keeps a resume checkpoint, so an interrupted schedule resumes where it
stopped, mid-training included. Each stage's output (and, on failure, its traceback) goes to
``<log_dir>/<run name>.<stage>.log``.
"""
import contextlib
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from pipeline.config import RunConfig
from pipeline.rundir import RunDir
from pipeline.stages import get, run_stage
from pipeline.stages.registry import up_to_date
from utils.errors import UserError


@dataclass
class Job:
    """One run and the stages it should have, in order, each with its options."""

    config: RunConfig
    stages: list = field(default_factory=list)  # [(stage name, options or None)]

    @property
    def run(self) -> RunDir:
        return RunDir.of(self.config)

    def pending(self) -> list:
        """The stages whose output is missing or was computed from other inputs (configuration or
        options), and those that need or follow a pending stage, in order."""
        out, names = [], set()
        for name, options in self.stages:
            stage = get(name)
            if names & set(stage.needs + stage.follows) or not up_to_date(name, self.run, self.config, options):
                out.append((name, options))
                names.add(name)
        return out


def run_job(job: Job, log_dir: Path, threads: int = 0) -> dict:
    """Run ``job``'s missing stages in order; returns {stage: seconds} for the stages it ran."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _run_stages(job, log_dir)
    finally:
        torch.set_num_threads(previous)


def _run_stages(job: Job, log_dir: Path) -> dict:
    """Under DDP (a Slurm task with several GPUs) every rank trains; rank 0 alone runs the rest."""
    from pipeline.stages.train import resumable
    from utils import distributed

    timings = {}
    rank = distributed.launched_rank()
    for name, options in job.pending():
        if rank > 0 and name != "train":
            break
        suffix = f".rank{rank}" if rank else ""
        log = log_dir / f"{job.config.run_name}.{name}{suffix}.log"
        started = time.perf_counter()
        with open(log, "w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            try:  # a stale run is retrained in place (the grid owns its directories); an interrupted one resumes
                config = (replace(job.config, overwrite=True, resume=resumable(job.config)) if name == "train"
                          else job.config)
                run_stage(name, config, options)
                failure = None
            except Exception as error:  # reported below with the log's path, never swallowed
                traceback.print_exc(file=handle)
                failure = f"{type(error).__name__}: {error}"
            finally:
                if name == "train":
                    distributed.shutdown()  # the later stages are single-process
        if failure:
            raise UserError(f"the {name} stage of {job.config.run_name} failed ({failure}); see {log}")
        timings[name] = round(time.perf_counter() - started, 1)
    return timings


def run_jobs(jobs: list, workers: int = 1, log_dir=None, progress: bool = True, threads: int = None,
             on_done=None, executor: str = "local", slurm=None, submitit_dir=None) -> dict:
    """Run every missing stage of ``jobs``; returns {run name: {stage: seconds}} for those it ran.
    ``executor="local"`` with ``workers`` = 1 runs them in this process; with more, that many runs
    at once as submitit local jobs; ``executor="slurm"`` submits one Slurm array task per run
    (pipeline/executors.py). Every run uses ``threads`` CPU threads (default: as many as there are
    cores) whatever ``workers`` is, because CPU results depend on the thread count: the same grid
    gives the same numbers with any ``workers``. Runs with nothing pending are skipped."""
    from pipeline.executors import submit

    threads = threads or os.cpu_count() or 1
    on_done = on_done or (lambda name, timings: None)  # called as each run finishes, e.g. to save timings
    for job in jobs:
        for name, _ in job.stages:
            get(name)  # an unknown stage fails before any work starts
    log_dir = Path(log_dir or Path(jobs[0].config.out_dir) / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = [job for job in jobs if job.pending()]
    total = sum(len(job.pending()) for job in pending)
    results = {}
    with tqdm(total=total, desc="stages", dynamic_ncols=True, disable=not progress) as bar:
        if executor == "local" and workers == 1:
            for job in pending:
                results[job.config.run_name] = run_job(job, log_dir, threads)
                on_done(job.config.run_name, results[job.config.run_name])
                bar.update(len(results[job.config.run_name]))
            return results
        folder = Path(submitit_dir or Path(jobs[0].config.out_dir) / "submitit")
        return submit(pending, executor, folder, log_dir, threads, workers, slurm, on_done, bar.update) if pending \
            else results
