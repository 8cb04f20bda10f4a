"""One run's work: a :class:`Job` (a run and the stages it should have) and :func:`run_job`, which
runs the job's missing stages in this process. Both the scheduler (pipeline/schedule.py) and the
executors' submitted tasks (pipeline/executors.py) use them, so they live below both.

Each stage's output (and, on failure, its traceback) goes to ``<log_dir>/<run name>.<stage>.log``.
A run whose job failed is recorded in ``<log_dir>/<run name>.failure.json`` (its stage and one-line
reason) until a later job of it succeeds: a grid goes on past it, and a rerun leaves it alone unless
asked to retry it (:func:`recorded_failure`).
"""
import contextlib
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.rundir import RunDir
from pipeline.stages import get, run_stage
from pipeline.stages.registry import ready, restorable, up_to_date
from pipeline.stages.train import resumable
from utils import distributed
from utils.errors import UserError
from utils.io import read_json, save_json
from utils.threads import cpu_threads


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
        options), and those that need or follow a pending stage, in order. A stage that finished but
        whose checkpoint the results archive did not keep (:func:`restorable`) runs again only when a
        stage to run needs or follows it, and does not make the stages after it stale: its rerun keeps
        their results when it reproduces the recorded model (pipeline.stages.train.keep_results)."""
        names, kept = set(), set()
        for name, options in self.stages:
            stage = get(name)
            if names & set(stage.needs + stage.follows):
                names.add(name)
            elif restorable(name, self.run, self.config, options):
                kept.add(name)
            elif not up_to_date(name, self.run, self.config, options):
                names.add(name)
        while True:  # what the stages to run read, and what that reads in turn
            read = {need for name in names for need in get(name).needs + get(name).follows} & kept - names
            if not read:
                return [(name, options) for name, options in self.stages if name in names]
            names |= read


def allocated_cpus() -> int:
    """The CPU cores this process may use: Slurm's allocation (SLURM_CPUS_PER_TASK) inside a Slurm
    task, else the affinity mask (a container's or taskset's cores), else the machine's count. It is
    read where the run executes, never on the host that submitted it."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no affinity mask on this platform
        return os.cpu_count() or 1


class RunStopped(UserError):
    """Slurm stopped the run's task and will not requeue it: the run was stopped, not broken, so
    it is not recorded as failed and the next invocation goes on with it."""


def failure_path(log_dir, run_name: str, rank: int = 0) -> Path:
    """Where rank ``rank`` records that ``run_name``'s job failed: every rank writes its own (a
    failure may be one rank's alone, a GPU out of memory, and the others are then stopped)."""
    return Path(log_dir) / (f"{run_name}.failure.json" if rank == 0 else f"{run_name}.failure.rank{rank}.json")


def _failure_records(log_dir, run_name: str) -> list:
    return sorted(Path(log_dir).glob(f"{run_name}.failure*.json"))


def record_failure(log_dir, run_name: str, reason: str, config_hash: str = None) -> None:
    """Note that ``run_name``'s job failed, why (one line) and for which configuration."""
    save_json({"run_name": run_name, "reason": reason, "config_hash": config_hash},
              failure_path(log_dir, run_name, distributed.launched_rank()))


def recorded_failure(log_dir, run_name: str, config_hash: str = None):
    """The one-line reason ``run_name``'s last job failed (rank 0's, else another rank's), or None
    when it has not failed, its last job succeeded, or it failed with another configuration than
    ``config_hash`` (changed flags deserve a new try)."""
    for path in _failure_records(log_dir, run_name):
        record = read_json(path, dict, "delete it to let the run be tried again")
        if config_hash is not None and record.get("config_hash") not in (None, config_hash):
            continue
        reason = record.get("reason")
        return reason if isinstance(reason, str) and reason else f"see {path}"
    return None


def forget_failure(log_dir, run_name: str) -> None:
    """Remove every rank's record of ``run_name``'s failure (it is tried again, or it succeeded)."""
    for path in _failure_records(log_dir, run_name):
        path.unlink(missing_ok=True)


def run_job(job: Job, log_dir: Path, threads: int = None) -> dict:
    """Run ``job``'s missing stages in order with ``threads`` CPU threads (default: the cores of this
    process's allocation, :func:`allocated_cpus`); returns {stage: seconds} for the stages it ran.
    A failure is recorded by the rank it happened on (:func:`record_failure`) before it is raised,
    wherever the job runs (this process, a local worker or a Slurm task, which no driver watches);
    the record is cleared once the run has nothing left to do (a stage deferred until another run's
    output exists is not done)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)  # on this node: a Slurm task may run where the driver did not
    try:
        with cpu_threads(threads or allocated_cpus()):  # torch's and every BLAS/OpenMP pool alike
            timings = _run_stages(job, log_dir)
    except RunStopped:
        raise
    except UserError as error:
        record_failure(log_dir, job.config.run_name, str(error), job.config.config_hash())
        raise
    if distributed.launched_rank() == 0 and not job.pending():
        forget_failure(log_dir, job.config.run_name)
    return timings


def _requeue_refused(error: BaseException) -> bool:
    """submitit raises UncompletedJobError from its signal handler when Slurm stops a task that it
    will not requeue (timed out too often, or not checkpointable): the run was stopped, not broken."""
    return type(error).__name__ == "UncompletedJobError" and type(error).__module__.startswith("submitit")


def _run_stages(job: Job, log_dir: Path) -> dict:
    """Under DDP (a Slurm task with several GPUs) every rank trains; rank 0 alone runs the rest.
    Rank 0 alone decides whether to resume, from its own disk: the train stage sends its resume
    state to the other ranks, whose nodes may not see the file."""
    timings, deferred = {}, set()
    rank = distributed.launched_rank()
    first = {name for name, _ in job.pending()}
    while True:  # asked again after each stage: a restored checkpoint that differs leaves its results pending
        now = first | {name for name, _ in job.pending()}
        todo = [(name, options) for name, options in job.stages if name in now and name not in {*timings, *deferred}]
        if not todo:
            break
        name, options = todo[0]
        if not ready(name, options) or deferred & set(get(name).needs + get(name).follows):
            deferred.add(name)  # what it reads from another run is not there yet: it stays pending for a later pass
            continue
        if rank > 0 and name != "train":
            break
        suffix = f".rank{rank}" if rank else ""
        log = log_dir / f"{job.config.run_name}.{name}{suffix}.log"
        started = time.perf_counter()
        resumed = name == "train" and rank == 0 and resumable(job.config, distributed.launched_world_size())
        with open(log, "w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
            try:  # a stale run is retrained in place (the grid owns its directories); an interrupted one resumes
                config = replace(job.config, overwrite=True, resume=resumed) if name == "train" else job.config
                run_stage(name, config, options)
                failure, stopped = None, False
            except Exception as error:  # reported below with the log's path, never swallowed
                traceback.print_exc(file=handle)
                stopped = _requeue_refused(error)
                failure = (f"{job.config.run_name} was stopped by Slurm during its {name} stage and not requeued "
                           f"({error}); run the same command again to go on from its last epoch"
                           if _requeue_refused(error) else
                           f"the {name} stage of {job.config.run_name} failed ({type(error).__name__}: {error})")
            finally:
                if name == "train":
                    distributed.shutdown()  # the later stages are single-process
        if failure:
            raise (RunStopped if stopped else UserError)(f"{failure}; see {log}")
        timings[name] = round(time.perf_counter() - started, 1)
        if rank == 0 and job.run.path.is_dir():  # in the run itself, so a run cut off later keeps its stages' times
            job.run.write("stage_seconds", {**(job.run.read("stage_seconds") or {}), name: timings[name]})
            # every attempt too: a stage run again (a resumed or retrained run) keeps its earlier times here
            earlier = (job.run.read("stage_runs") or {}).get("attempts", [])
            # a training resumed from a checkpoint ran only its last epochs: its time is not a whole stage's
            attempt = {"stage": name, "seconds": timings[name], "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
                       **({"resumed": True} if resumed else {})}
            job.run.write("stage_runs", {"attempts": earlier + [attempt]})
    return timings
