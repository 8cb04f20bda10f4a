"""Run what is missing: for each run, for each stage whose output does not exist yet, run it.

Stages of one run run in order (a stage's needs come before it); different runs may run at once
as submitit jobs, locally or on Slurm (pipeline/executors.py). A stage's output is written
atomically and training keeps a resume checkpoint, so an interrupted schedule resumes where it
stopped, mid-training included. Each stage's output (and, on failure, its traceback) goes to
``<log_dir>/<run name>.<stage>.log``.
"""
from pathlib import Path

from tqdm import tqdm

from pipeline.executors import submit
from pipeline.jobs import Job, run_job
from pipeline.stages import get
from utils.progress import bar_disabled

__all__ = ["Job", "run_job", "run_jobs"]


def run_jobs(jobs: list, workers: int = 1, log_dir=None, progress: bool = True, threads: int = None,
             on_done=None, executor: str = "local", slurm=None, submitit_dir=None) -> dict:
    """Run every missing stage of ``jobs``; returns {run name: {stage: seconds}} for those it ran.
    ``executor="local"`` with ``workers`` = 1 runs them in this process; with more, that many runs
    at once as submitit local jobs; ``executor="slurm"`` submits one Slurm array task per run
    (pipeline/executors.py). Every run uses ``threads`` CPU threads (default: the cores of the
    allocation it runs in, read where it runs: pipeline.jobs.allocated_cpus) whatever ``workers``
    is, because CPU results depend on the thread count: with ``threads`` set, the same grid
    gives the same numbers with any ``workers``. Runs with nothing pending are skipped."""
    on_done = on_done or (lambda name, timings: None)  # called as each run finishes, e.g. to save timings
    for job in jobs:
        for name, _ in job.stages:
            get(name)  # an unknown stage fails before any work starts
    log_dir = Path(log_dir or Path(jobs[0].config.out_dir) / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = [job for job in jobs if job.pending()]
    total = sum(len(job.pending()) for job in pending)
    results = {}
    with tqdm(total=total, desc="stages", dynamic_ncols=True, disable=bar_disabled(progress)) as bar:
        if executor == "local" and workers == 1:
            for job in pending:
                results[job.config.run_name] = run_job(job, log_dir, threads)
                on_done(job.config.run_name, results[job.config.run_name])
                bar.update(len(results[job.config.run_name]))
            return results
        folder = Path(submitit_dir or Path(jobs[0].config.out_dir) / "submitit")
        return submit(pending, executor, folder, log_dir, threads, workers, slurm, on_done, bar.update) if pending \
            else results
