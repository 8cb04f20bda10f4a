"""Where a grid's runs execute: this process, local worker processes, or a Slurm job array, all
through submitit (one submitted task per run; each task runs its run's missing stages and, when the
run was interrupted mid-training, resumes it from its last finished epoch).

    local, --jobs 1   every run in this process, one after the other
    local, --jobs N   N runs at once, each a submitit LocalExecutor job (a subprocess)
    slurm             one array task per run (sbatch --array, at most --jobs at once), each with
                      --slurm_gpus GPUs on --slurm_partition for --slurm_time minutes; a task with
                      several GPUs trains its run with DDP (one process per GPU)
"""
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError

EXECUTORS = ("local", "slurm")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class SlurmOptions:
    partition: str = None   # sbatch --partition (None: the cluster's default)
    gpus: int = 1           # GPUs per run (> 1: DDP over them)
    time: int = 720         # minutes per run before Slurm stops it (a requeued task resumes)
    cpus_per_gpu: int = 8

    def check(self) -> "SlurmOptions":
        if self.gpus < 0 or self.time < 1 or self.cpus_per_gpu < 1:
            raise UserError(f"--slurm_gpus must be ≥ 0, --slurm_time and --slurm_cpus_per_gpu ≥ 1; got "
                            f"{self.gpus}, {self.time}, {self.cpus_per_gpu}")
        return self


def add_executor_flags(parser) -> None:
    """The flags of every entry script that runs a grid (reproduce.py, sweep.py)."""
    group = parser.add_argument_group("where the runs execute (submitit)")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: this machine, --jobs runs at once (default); slurm: a Slurm job array, one "
                            "task per run, each resuming its run if it was interrupted")
    group.add_argument("--jobs", type=int, default=1,
                       help="runs at once: local worker processes, or Slurm's array parallelism (default 1)")
    group.add_argument("--slurm_partition", default=None, help="sbatch --partition (default: the cluster's)")
    group.add_argument("--slurm_gpus", type=int, default=1, help="GPUs per run; more than 1 trains it with DDP")
    group.add_argument("--slurm_time", type=int, default=720, help="minutes per run (default 720)")
    group.add_argument("--slurm_cpus_per_gpu", type=int, default=8, help="CPU cores per GPU (default 8)")
    group.add_argument("--submitit_dir", default=None,
                       help="submitit's job files and logs (default: OUT_DIR/submitit)")
    group.add_argument("--threads", type=int, default=None,
                       help="CPU threads of every run (default: the number of cores), the same whatever --jobs is, "
                            "since CPU results depend on the thread count")


def slurm_options(args) -> SlurmOptions:
    """The Slurm options of ``args``, after checking every flag :func:`add_executor_flags` added."""
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise UserError("--jobs and --threads must be at least 1")
    return SlurmOptions(args.slurm_partition, args.slurm_gpus, args.slurm_time, args.slurm_cpus_per_gpu).check()


def make_executor(kind: str, folder, slurm: SlurmOptions = None, parallel: int = 1):
    """A configured submitit executor for ``kind`` (``local`` or ``slurm``)."""
    import submitit

    if kind not in EXECUTORS:
        raise UserError(f"unknown executor '{kind}'; choose one of {', '.join(EXECUTORS)}")
    if kind == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=60 * 24 * 30)  # a run ends when it is done, not on a clock
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=str(folder))
    except RuntimeError as error:  # submitit looks for srun
        raise UserError(f"--executor slurm needs a Slurm cluster ({error}); run it on the cluster's login node, or "
                        f"use --executor local") from None
    executor.update_parameters(**slurm_parameters(slurm or SlurmOptions(), parallel))
    return executor


def slurm_parameters(slurm: SlurmOptions, parallel: int) -> dict:
    """submitit's SlurmExecutor parameters: one task (process) per GPU on one node, so a run with
    several GPUs trains with DDP; the array runs at most ``parallel`` runs at once; Slurm signals
    the task 2 minutes before its time is up, and submitit requeues it (it resumes)."""
    return {"time": slurm.time, "gpus_per_node": slurm.gpus or None, "ntasks_per_node": max(slurm.gpus, 1),
            "nodes": 1, "cpus_per_task": slurm.cpus_per_gpu, "array_parallelism": parallel, "job_name": "ml-mmdr",
            "signal_delay_s": 120, **({"partition": slurm.partition} if slurm.partition else {})}


class RunTask:
    """The callable of one submitted task: run one job's missing stages (train resumes an
    interrupted run). Checkpointable, so a task Slurm preempts or times out is requeued and goes
    on from the run's last finished epoch."""

    def __init__(self, job, log_dir, threads: int):
        self.job, self.log_dir, self.threads = job, Path(log_dir), threads

    def __call__(self) -> dict:
        from pipeline.schedule import run_job

        _export_distributed_environment()
        return run_job(self.job, self.log_dir, self.threads)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(RunTask(self.job, self.log_dir, self.threads))


def _export_distributed_environment() -> None:
    """Inside a Slurm task with several processes (one per GPU), set RANK, WORLD_SIZE, LOCAL_RANK and
    the rendezvous address as torchrun would, so the train stage runs DDP."""
    try:
        import submitit

        environment = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (this process)
        return
    if environment.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def submit(jobs: list, kind: str, folder, log_dir, threads: int, parallel: int = 1, slurm: SlurmOptions = None,
           on_done=None, progress=None) -> dict:
    """Run ``jobs`` (each with a pending stage) as one submitted task each; at most ``parallel`` at
    once. Returns {run name: {stage: seconds}} and calls ``on_done(name, timings)`` as each ends."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    executor = make_executor(kind, folder, slurm, parallel)
    tasks = [RunTask(job, log_dir, threads) for job in jobs]
    results = {}
    if kind == "slurm":  # the array runs on its own; this command returns once it is queued
        handles = executor.submit_array(tasks)
        print(f"submitted Slurm array job {handles[0].job_id.split('_')[0]}: {len(handles)} runs, at most {parallel} "
              f"at once (submitit files in {folder}); run the same command again once it has finished",
              file=sys.stderr)
        return results
    submitted, waiting = [], list(zip(jobs, tasks))
    while waiting or submitted:
        while waiting and len(submitted) < parallel:
            job, task = waiting.pop(0)
            submitted.append((job, executor.submit(task)))
        finished = [(job, handle) for job, handle in submitted if handle.done()]
        for job, handle in finished:
            submitted.remove((job, handle))
            name = job.config.run_name
            try:
                results[name] = handle.result()
            except Exception as error:  # submitit wraps the task's exception; its message names the log
                raise UserError(_first_line(error, name, handle)) from None
            (on_done or (lambda *a: None))(name, results[name])
            if progress is not None:
                progress(len(results[name]))
        if not finished:
            time.sleep(0.5)
    return results


def _first_line(error: Exception, name: str, handle) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if "UserError" in line or "Error:" in line), lines[-1] if lines
                 else type(error).__name__)
    return f"the task of {name} failed ({cause.strip()}); see {handle.paths.stderr}"
