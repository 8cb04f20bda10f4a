"""Run what is missing: for each run, for each stage whose output does not exist yet, run it.

Stages of one run run in order (a stage's needs come before it); different runs may run at once
as submitit jobs, locally or on Slurm (pipeline/executors.py). A stage's output is written
atomically and training keeps a resume checkpoint, so an interrupted schedule resumes where it
stopped, mid-training included. Each stage's output (and, on failure, its traceback) goes to
``<log_dir>/<run name>.<stage>.log``.
"""
from pathlib import Path

from tqdm import tqdm

import sys

from pipeline.executors import submit
from pipeline.jobs import Job, forget_failure, record_failure, recorded_failure, run_job
from pipeline.stages import get
from utils.errors import UserError
from utils.progress import bar_disabled

__all__ = ["Job", "RunsFailed", "run_job", "run_jobs"]


class RunsFailed(UserError):
    """Runs of a grid failed or were left alone because they had failed before; ``results`` holds
    what the others ran ({run name: {stage: seconds}}), ``failures`` {run name: one-line reason}."""

    def __init__(self, failures: dict, skipped: set, results: dict, log_dir: Path):
        self.failures, self.skipped, self.results, self.log_dir = failures, skipped, results, log_dir
        first = next(iter(failures.items()))
        before = f" ({len(skipped)} left alone: they had failed before)" if skipped else ""
        super().__init__(f"{len(failures)} run(s) failed{before}: {', '.join(failures)}; the first: {first[1]}; every "
                         f"reason is in {log_dir}/<run>.failure.json; fix the cause and run the same command with "
                         f"--retry_failed to try them again")

    def merge(self, later: "RunsFailed") -> "RunsFailed":
        """These failures and those of a later pass over other runs of the same grid."""
        return RunsFailed({**self.failures, **later.failures}, self.skipped | later.skipped,
                          {**self.results, **later.results}, self.log_dir)


def run_jobs(jobs: list, workers: int = 1, log_dir=None, progress: bool = True, threads: int = None,
             on_done=None, executor: str = "local", slurm=None, submitit_dir=None, keep_going: bool = False,
             retry_failed: bool = False) -> dict:
    """Run every missing stage of ``jobs``; returns {run name: {stage: seconds}} for those it ran.
    ``executor="local"`` with ``workers`` = 1 runs them in this process; with more, that many runs
    at once as submitit local jobs; ``executor="slurm"`` submits one Slurm array task per run
    (pipeline/executors.py). Every run uses ``threads`` CPU threads (default: the cores of the
    allocation it runs in, read where it runs: pipeline.jobs.allocated_cpus) whatever ``workers``
    is, because CPU results depend on the thread count: with ``threads`` set, the same grid
    gives the same numbers with any ``workers``. Runs with nothing pending are skipped.

    A failed run is recorded with its one-line reason (pipeline.jobs.record_failure). With
    ``keep_going`` the others go on and :class:`RunsFailed` is raised once they are done; without,
    the first failure stops the grid. A run that failed in an earlier invocation is left alone,
    unless ``retry_failed``, which tries it again after the others: one bad cell never blocks a grid."""
    on_done = on_done or (lambda name, timings: None)  # called as each run finishes, e.g. to save timings
    for job in jobs:
        for name, _ in job.stages:
            get(name)  # an unknown stage fails before any work starts
    log_dir = Path(log_dir or Path(jobs[0].config.out_dir) / "logs")
    pending = [job for job in jobs if job.pending()]
    hashes = {job.config.run_name: job.config.config_hash() for job in jobs}
    before = {name: recorded_failure(log_dir, name, hashes[name]) for name in (job.config.run_name for job in pending)}
    before = {name: reason for name, reason in before.items() if reason is not None}
    skipped = set() if retry_failed else set(before)
    pending = sorted((job for job in pending if job.config.run_name not in skipped),
                     key=lambda job: job.config.run_name in before)  # retried failures last
    if skipped:
        print(f"leaving alone {len(skipped)} run(s) that failed before: {', '.join(sorted(skipped))} "
              f"(--retry_failed tries them again)", file=sys.stderr)
    for name in set(before) - skipped:  # tried again: a task that dies without a word must not leave the old reason
        forget_failure(log_dir, name)
    failures = {name: before[name] for name in sorted(skipped)}

    def failed(name: str, reason: str) -> str:
        # the task's own record names its stage's log; one killed outright (out of memory) left none
        failures[name] = recorded_failure(log_dir, name) or reason
        record_failure(log_dir, name, failures[name], hashes[name])
        return failures[name]

    total = sum(len(job.pending()) for job in pending)
    results = {}
    if pending:
        with tqdm(total=total, desc="stages", dynamic_ncols=True, disable=bar_disabled(progress)) as bar:
            if executor == "local" and workers == 1:  # run_job makes the log directory, as a submitted task does
                for job in pending:
                    name = job.config.run_name
                    try:
                        results[name] = run_job(job, log_dir, threads)
                    except UserError as error:
                        if not keep_going:
                            raise
                        failed(name, str(error))
                        continue
                    on_done(name, results[name])
                    bar.update(len(results[name]))
            else:
                folder = Path(submitit_dir or Path(jobs[0].config.out_dir) / "submitit")
                results = submit(pending, executor, folder, log_dir, threads, workers, slurm, on_done, bar.update,
                                 on_failure=failed, keep_going=keep_going)
    if failures:
        raise RunsFailed(failures, skipped, results, log_dir)
    return results
