"""Where a grid's runs execute: this process, local worker processes, or a Slurm job array, all
through submitit (one submitted task per run; each task runs its run's missing stages and, when the
run was interrupted mid-training, resumes it from its last finished epoch).

    local, --jobs 1   every run in this process, one after the other
    local, --jobs N   N runs at once, each a submitit LocalExecutor job (a subprocess)
    slurm             one array task per run (sbatch --array, at most --jobs at once), each on
                      --slurm_nodes nodes with --slurm_gpus GPUs each, on --slurm_partition for
                      --slurm_time minutes; a task with several GPUs trains its run with DDP (one
                      process per GPU, on every node)
"""
import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import submitit

from pipeline.jobs import allocated_cpus, run_job
from utils.errors import UserError

EXECUTORS = ("local", "slurm")
ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTED_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                         "GROUP_RANK", "GROUP_WORLD_SIZE")


@dataclass
class SlurmOptions:
    """The Slurm request of every array task; each field is the flag ``--slurm_<name>`` (one
    declaration: :func:`add_executor_flags` reads the defaults and help from here)."""

    partition: str = None   # sbatch --partition (default: the cluster's)
    nodes: int = 1          # nodes per run
    gpus: int = 1           # GPUs per node; nodes × gpus > 1 trains the run with DDP, one process per GPU
    time: int = 720         # minutes per run before Slurm stops it (a requeued task resumes)
    cpus_per_gpu: int = 8   # CPU cores per GPU (per process)
    mem: float = None       # GB of memory per node (default: the cluster's)

    def check(self) -> "SlurmOptions":
        if self.gpus < 0 or self.time < 1 or self.cpus_per_gpu < 1 or (self.mem is not None and not self.mem > 0):
            raise UserError(f"--slurm_gpus must be ≥ 0, --slurm_time and --slurm_cpus_per_gpu ≥ 1 and --slurm_mem "
                            f"positive; got {self.gpus}, {self.time}, {self.cpus_per_gpu}, {self.mem}")
        if self.nodes < 1 or (self.nodes > 1 and self.gpus < 1):
            raise UserError(f"--slurm_nodes must be at least 1, and several nodes need --slurm_gpus ≥ 1 (one process per "
                            f"GPU); got {self.nodes} node(s) with {self.gpus} GPU(s)")
        return self


SLURM_HELP = {"partition": "sbatch --partition",
              "nodes": "nodes per run: with --slurm_gpus G a run trains on nodes × G GPUs, with DDP across the nodes",
              "gpus": "GPUs per node of a run; more than 1 in all trains it with DDP",
              "time": "minutes per run before Slurm stops it (a requeued task resumes)",
              "cpus_per_gpu": "CPU cores per GPU, which is also every run's thread count unless --threads is given",
              "mem": "GB of memory per node"}
SLURM_TYPES = {"partition": str, "mem": float}  # the others are int


def add_executor_flags(parser) -> None:
    """The flags of every entry script that runs a grid (reproduce.py, sweep.py)."""
    group = parser.add_argument_group("where the runs execute (submitit)")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: this machine, --jobs runs at once, each on its own GPU while there are GPUs "
                            "enough (default); slurm: a Slurm job array, one task per run, each resuming its run "
                            "if it was interrupted")
    group.add_argument("--jobs", type=int, default=1,
                       help="runs at once: local worker processes, or Slurm's array parallelism (default 1)")
    for option in fields(SlurmOptions):
        default = option.default
        shown = "the cluster's" if default is None else default
        group.add_argument(f"--slurm_{option.name}", type=SLURM_TYPES.get(option.name, int), default=default,
                           help=f"{SLURM_HELP[option.name]} (default: {shown})")
    group.add_argument("--submitit_dir", default=None,
                       help="submitit's job files and logs (default: OUT_DIR/submitit)")
    group.add_argument("--threads", type=int, default=None,
                       help="CPU threads of every run (default: the cores of the allocation the run executes in: "
                            "Slurm's --cpus-per-task; locally the affinity mask's cores shared equally among the "
                            "--jobs run at once, so that they do not oversubscribe the machine). CPU results depend on "
                            "the thread count (config.json records it): give --threads to keep it whatever --jobs is")
    failing = parser.add_argument_group("when a run fails")
    stop = failing.add_mutually_exclusive_group()
    stop.add_argument("--keep_going", dest="keep_going", action="store_true", default=True,
                      help="the default: a failed run is recorded with its one-line reason (LOG_DIR/<run>.failure.json), "
                           "the others go on, and the command ends with one error line naming the failures (exit status 2)")
    stop.add_argument("--fail_fast", dest="keep_going", action="store_false",
                      help="stop the grid at the first failed run (the runs in flight are stopped and resume next time)")
    failing.add_argument("--retry_failed", action="store_true",
                         help="try again the runs that failed in an earlier invocation, after the others (without it they "
                              "are left alone, so one bad cell never blocks a grid)")


def slurm_options(args) -> SlurmOptions:
    """The Slurm options of ``args``, after checking every flag :func:`add_executor_flags` added."""
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        raise UserError("--jobs and --threads must be at least 1")
    return SlurmOptions(**{option.name: getattr(args, f"slurm_{option.name}") for option in fields(SlurmOptions)}
                        ).check()


def make_executor(kind: str, folder, slurm: SlurmOptions = None, parallel: int = 1):
    """A configured submitit executor for ``kind`` (``local`` or ``slurm``)."""
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
    """submitit's SlurmExecutor parameters: one task (process) per GPU on each of ``slurm.nodes``
    nodes, so a run with several GPUs trains with DDP; the array runs at most ``parallel`` runs at once; Slurm signals
    the task 2 minutes before its time is up, and submitit requeues it (it resumes). srun's
    --kill-on-bad-exit ends every rank of a run as soon as one exits with an error, instead of
    leaving the others in a collective until its timeout."""
    optional = {"partition": slurm.partition, "mem": f"{slurm.mem:g}GB" if slurm.mem else None}
    return {"time": slurm.time, "gpus_per_node": slurm.gpus or None, "ntasks_per_node": max(slurm.gpus, 1),
            "nodes": slurm.nodes, "cpus_per_task": slurm.cpus_per_gpu, "array_parallelism": parallel, "job_name": "ml-mmdr",
            "signal_delay_s": 120, "srun_args": ["--kill-on-bad-exit=1"],
            **{key: value for key, value in optional.items() if value is not None}}


class GpuSlots:
    """The GPUs of this machine, handed out to local jobs so that each trains on its own while
    there are enough (then the least-used one is shared). submitit's LocalExecutor exports
    CUDA_VISIBLE_DEVICES="" to every job unless told which GPUs it has, and gpus_per_node alone
    would give every job GPU 0. The devices are this process's CUDA_VISIBLE_DEVICES entries when
    it is set (numbers, UUIDs or MIG names), else 0..count-1."""

    def __init__(self, count: int, visible: str = None):
        entries = [entry.strip() for entry in visible.split(",") if entry.strip()] if visible is not None else None
        self.devices = entries[:count] if entries is not None else [str(index) for index in range(count)]
        self.in_use = {device: 0 for device in self.devices}

    @classmethod
    def of_this_machine(cls) -> "GpuSlots":
        import torch

        return cls(torch.cuda.device_count() if torch.cuda.is_available() else 0,
                   os.environ.get("CUDA_VISIBLE_DEVICES"))

    def take(self):
        """The device for the next job (None: there is no GPU, the job runs on the CPU)."""
        if not self.devices:
            return None
        device = min(self.devices, key=lambda name: (self.in_use[name], self.devices.index(name)))
        self.in_use[device] += 1
        return device

    def give_back(self, device) -> None:
        if device is not None:
            self.in_use[device] -= 1


def local_parameters(device) -> dict:
    """The LocalExecutor parameters of one job on ``device``: submitit writes the job's
    CUDA_VISIBLE_DEVICES itself, from integer indices only, so the device (an index, a UUID or a
    MIG name) is exported by a setup line that runs before the job starts."""
    return {"setup": [f"export CUDA_VISIBLE_DEVICES={shlex.quote(device)}"] if device is not None else []}


class RunTask:
    """The callable of one submitted task: run one job's missing stages (train resumes an
    interrupted run). Checkpointable, so a task Slurm preempts or times out is requeued and goes
    on from the run's last finished epoch. A local task watches ``driver`` (the sweep's process, as
    :func:`process_identity` names it) and stops when it is gone (:func:`stop_with`)."""

    def __init__(self, job, log_dir, threads: int = None, driver: tuple = None):
        self.job, self.log_dir, self.threads, self.driver = job, Path(log_dir), threads, driver

    def __call__(self) -> dict:
        if self.driver is not None and self.driver[0] != os.getpid():
            stop_with(self.driver)
        export_distributed_environment()
        return run_job(self.job, self.log_dir, self.threads)

    def checkpoint(self, *args, **kwargs):
        return submitit.helpers.DelayedSubmission(RunTask(self.job, self.log_dir, self.threads, self.driver))


def process_identity(pid: int) -> tuple:
    """(pid, start time in clock ticks since boot) of a running process: the pair names it even once
    its pid is reused (Linux's /proc/PID/stat; the start time is None elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return pid, None
    return pid, int(stat.rsplit(")", 1)[1].split()[19])  # field 22: after the parenthesised name, the 20th


def _running(identity: tuple) -> bool:
    pid, started = identity
    if started is None:  # no /proc: whether some process has this pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        return process_identity(pid)[1] == started and Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return False


def stop_with(driver: tuple, every_s: float = 1.0) -> threading.Thread:
    """Stop this task, what it started and its submitit controller once the ``driver`` process is
    gone. A driver killed with SIGKILL (or by the out-of-memory killer) runs no handler: without
    this, its local jobs would train on unwatched, holding their runs' locks so that the rerun is
    refused. Killing loses only the unfinished epoch: every stage writes atomically and training
    resumes from its last finished epoch. The same holds when the controller is gone."""
    controller = process_identity(os.getppid())  # named now: once it is gone, the parent is another process

    def watch() -> None:  # a controller killed (out of memory) would leave this task orphaned as well
        while _running(driver) and _running(controller):
            time.sleep(every_s)
        for pid in _descendants(os.getpid()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if _running(controller):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(controller[0], signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="stop-with-driver", daemon=True)
    thread.start()
    return thread


def export_distributed_environment() -> None:
    """Inside a submitit task with several processes (one per GPU, on one node or several), set what
    torchrun would set for a worker: RANK and WORLD_SIZE over every node, LOCAL_RANK and
    LOCAL_WORLD_SIZE on this one, GROUP_RANK and GROUP_WORLD_SIZE (the node's index and the node
    count), and MASTER_ADDR (the job's first node) and MASTER_PORT, so the train stage runs DDP.
    These replace any the submitting shell passed down (sbatch exports its environment), the port
    included. A single-process task drops inherited ones, which would otherwise make it wait for
    ranks that do not exist."""
    try:
        environment = submitit.JobEnvironment()
    except RuntimeError:  # not inside a submitit job (this process)
        return
    if environment.num_tasks > 1:
        # submitit takes an inherited MASTER_PORT as given (overwrite=True replaces only the other
        # variables): two multi-GPU array tasks on one node would then share one port and fail to start.
        # Without it, the port is drawn from the job's id: the same for its tasks, another for another job
        os.environ.pop("MASTER_PORT", None)
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        os.environ.update(GROUP_RANK=str(environment.node), GROUP_WORLD_SIZE=str(environment.num_nodes))
    else:
        for name in DISTRIBUTED_VARIABLES:
            os.environ.pop(name, None)


def local_threads(cores: int, at_once: int) -> int:
    """Each local job's thread count when ``at_once`` jobs share ``cores``: an equal share, at least
    one (eight jobs each given every core would run 8× oversubscribed)."""
    return max(1, cores // max(1, at_once))


def submit(jobs: list, kind: str, folder, log_dir, threads: int = None, parallel: int = 1,
           slurm: SlurmOptions = None, on_done=None, progress=None, gpus: GpuSlots = None, on_failure=None,
           keep_going: bool = False) -> dict:
    """Run ``jobs`` (each with a pending stage) as one submitted task each; at most ``parallel`` at
    once, locally each on its own GPU from ``gpus`` (default: this machine's). Returns {run name:
    {stage: seconds}} and calls ``on_done(name, timings)`` as each ends, and ``on_failure(name,
    reason)`` (which returns the reason to report) as a local job fails. With ``keep_going`` the
    others go on; without, and when this process is interrupted, the jobs still running are stopped
    (their runs resume next time) before the error is raised, so none is left holding its run's lock."""
    paths = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *(entry for entry in paths if entry != str(ROOT))])
    executor = make_executor(kind, folder, slurm, parallel)
    Path(log_dir).mkdir(parents=True, exist_ok=True)  # after make_executor: a refused --executor writes nothing
    if kind == "local" and threads is None:  # local jobs share this machine's cores; a Slurm task has its own
        threads = local_threads(allocated_cpus(), min(parallel, len(jobs)))
    watched = process_identity(os.getpid()) if kind == "local" else None  # a Slurm array outlives this command
    tasks = [RunTask(job, log_dir, threads, watched) for job in jobs]
    results = {}
    if kind == "slurm":  # the array runs on its own; this command returns once it is queued
        handles = executor.submit_array(tasks)
        print(f"submitted Slurm array job {handles[0].job_id.split('_')[0]}: {len(handles)} runs, at most {parallel} "
              f"at once (submitit files in {folder}); run the same command again once it has finished",
              file=sys.stderr)
        return results
    named = [(job.config.run_name, task) for job, task in zip(jobs, tasks)]

    def finished(name: str, timings: dict) -> None:
        (on_done or (lambda *a: None))(name, timings)
        if progress is not None:
            progress(len(timings))

    return run_local(named, executor, parallel, gpus or GpuSlots.of_this_machine(), finished, on_failure, keep_going)


def run_local(named_tasks: list, executor, parallel: int, gpus: GpuSlots, on_result=None, on_failure=None,
              keep_going: bool = False) -> dict:
    """Run each (name, callable) of ``named_tasks`` as a job of the LocalExecutor ``executor``, at most
    ``parallel`` at once, each with its own device from ``gpus``; returns {name: result} and calls
    ``on_result(name, result)`` as each ends. A failed job is passed to ``on_failure(name, reason)``,
    whose return is the reason reported; then, unless ``keep_going``, it raises UserError naming its
    log, after the jobs still running are stopped."""
    results, submitted, waiting = {}, [], list(named_tasks)
    try:
        while waiting or submitted:
            while waiting and len(submitted) < parallel:
                name, task = waiting.pop(0)
                device = gpus.take()
                executor.update_parameters(**local_parameters(device))
                submitted.append((name, executor.submit(task), device))
            finished, stop = [entry for entry in submitted if entry[1].done()], None
            for entry in finished:  # every finished job is reported before a failure stops the others
                name, handle, device = entry
                submitted.remove(entry)
                gpus.give_back(device)
                try:
                    results[name] = handle.result()
                except Exception as error:  # submitit wraps the task's exception; its message names the log
                    reason = _first_line(error, name, handle)
                    reason = on_failure(name, reason) if on_failure is not None else reason
                    stop = stop or (None if keep_going else reason)
                    continue
                if on_result is not None:
                    on_result(name, results[name])
            if stop:
                raise UserError(stop)
            if not finished:
                time.sleep(0.5)
    finally:
        _stop([handle for _, handle, _ in submitted])
    return results


def _stop(handles: list, grace_s: float = 30.0) -> None:
    """Stop local jobs and the task process each one started, and wait for them to exit.

    A job is submitit's controller process, which runs the task as its child. SIGINT (submitit's
    ``cancel``) makes the controller interrupt its task and kill it a second later; but a command
    started in the background (``nohup … &``) inherits SIGINT ignored, and then nothing happens.
    Killing the controller alone would leave its task orphaned, still running its run. So whatever
    still runs after ``grace_s`` (at once, for a controller that ignores SIGINT) is killed, the
    task and what it started before the controller: every stage writes atomically and training
    resumes from its last finished epoch, so a killed run loses only its unfinished epoch."""
    live = [(handle, handle._process) for handle in handles
            if getattr(handle, "_process", None) is not None and handle._process.poll() is None]
    for handle, _ in live:
        handle.cancel(check=False)
    deadline = time.time() + (0.0 if all(_ignores_sigint(process.pid) for _, process in live) else grace_s)
    while any(not handle.done() for handle, _ in live) and time.time() < deadline:
        time.sleep(0.2)
    for _, process in live:
        if process.poll() is not None:  # it ended, its task with it
            continue
        for pid in _descendants(process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()


def _ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGINT (Linux's /proc/PID/status SigIgn mask; False elsewhere)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), "0")
    return bool(int(mask, 16) >> (signal.SIGINT - 1) & 1)


def _descendants(pid: int) -> list:
    """The processes below ``pid``, parents before their children (Linux's /proc; empty elsewhere)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop(0)
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # a process that exits meanwhile
                pids = [int(child) for child in children.read_text().split()]
                found += pids
                frontier += pids
    return found


def _first_line(error: Exception, name: str, handle) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if "UserError" in line or "Error:" in line), lines[-1] if lines
                 else type(error).__name__)
    return f"the task of {name} failed ({cause.strip()}); see {handle.paths.stderr}"
