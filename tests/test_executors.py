"""Where runs execute, on machines unlike this one: each local job on its own GPU (with a fake
device count), the Slurm request, inherited distributed variables, a refused requeue, the thread
count from the allocation, and a failed local job that stops the others."""
import os
import time
from pathlib import Path

import pytest

from pipeline.executors import (DISTRIBUTED_VARIABLES, GpuSlots, SlurmOptions, export_distributed_environment,
                                make_executor, run_local, slurm_parameters)
from pipeline.jobs import allocated_cpus
from utils.errors import UserError


def visible_devices() -> str:
    """What a local job sees (submitit exports CUDA_VISIBLE_DEVICES to every job)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")


def test_each_local_job_gets_its_own_gpu_and_shares_only_when_there_are_more_jobs(tmp_path):
    executor = make_executor("local", tmp_path)
    named = [(f"run{index}", visible_devices) for index in range(3)]
    seen = run_local(named, executor, parallel=3, gpus=GpuSlots(count=3))
    assert sorted(seen.values()) == ["0", "1", "2"]
    # the parent's own CUDA_VISIBLE_DEVICES (here UUIDs) names the devices the jobs are given
    seen = run_local(named[:2], executor, parallel=2, gpus=GpuSlots(count=2, visible="GPU-aa11,GPU-bb22"))
    assert sorted(seen.values()) == ["GPU-aa11", "GPU-bb22"]
    # without a GPU a job sees none, as submitit sets it
    assert run_local(named[:1], executor, parallel=1, gpus=GpuSlots(count=0)) == {"run0": ""}


def test_gpu_slots_balance_jobs_over_devices():
    slots = GpuSlots(count=2, visible="4,5,6")  # two devices usable, as torch counts them
    taken = [slots.take() for _ in range(3)]
    assert taken == ["4", "5", "4"]
    slots.give_back("5")
    assert slots.take() == "5"
    assert GpuSlots(count=8).take() == "0" and GpuSlots(count=0).take() is None


def fail_fast():
    raise RuntimeError("disk full on purpose")


def sleep_long():
    time.sleep(120)
    return "finished"


def test_a_failed_local_job_stops_the_others_before_the_error(tmp_path):
    executor = make_executor("local", tmp_path)
    started = time.time()
    with pytest.raises(UserError, match="the task of broken failed .*disk full on purpose"):
        run_local([("slow", sleep_long), ("broken", fail_fast)], executor, parallel=2, gpus=GpuSlots(0))
    assert time.time() - started < 60  # the 120 s job was stopped, not waited for
    import subprocess

    running = subprocess.run(["pgrep", "-f", f"submitit.local._local {tmp_path}"], capture_output=True, text=True)
    assert running.stdout.split() == []  # no job left behind holding its run's lock


def sleep_long_recording_pid(path):
    Path(path).write_text(str(os.getpid()))
    time.sleep(120)
    return "finished"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


STOP_UNDER_NOHUP = """
import functools, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)  # what 'nohup … &' passes down to the grid and its jobs
from pipeline.executors import GpuSlots, make_executor, run_local
from tests.test_executors import fail_fast, sleep_long_recording_pid
from utils.errors import UserError
slow = functools.partial(sleep_long_recording_pid, sys.argv[2])
try:
    run_local([("slow", slow), ("broken", fail_fast)], make_executor("local", sys.argv[1]), parallel=2, gpus=GpuSlots(0))
except UserError as error:
    print(error)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads processes from Linux's /proc")
def test_a_job_that_ignores_sigint_is_stopped_with_its_task_not_orphaned(tmp_path):
    """Started in the background, the grid's jobs ignore SIGINT: stopping them must still end the
    task process that runs the stages, not only submitit's controller above it."""
    import subprocess
    import sys

    pid_file = tmp_path / "task.pid"
    root = Path(__file__).resolve().parents[1]
    started = time.time()
    done = subprocess.run([sys.executable, "-c", STOP_UNDER_NOHUP, str(tmp_path / "jobs"), str(pid_file)], cwd=root,
                          capture_output=True, text=True, timeout=110, env={**os.environ, "PYTHONPATH": str(root)})
    assert "the task of broken failed" in done.stdout, done.stdout + done.stderr
    assert time.time() - started < 100  # the 120 s task was stopped, not waited for
    task = int(pid_file.read_text())
    deadline = time.time() + 10
    while alive(task) and time.time() < deadline:  # SIGKILL is delivered asynchronously
        time.sleep(0.1)
    assert not alive(task)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads processes from Linux's /proc")
def test_the_process_tree_and_the_ignored_sigint_are_read_from_proc():
    import signal
    import subprocess

    from pipeline.executors import _descendants, _ignores_sigint

    # SIGINT handled as by default, whatever the process that started pytest passed down
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30; wait"],
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    ignoring = subprocess.Popen(["sleep", "30"], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.time() + 10
        while len(_descendants(shell.pid)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert len(_descendants(shell.pid)) == 2  # its two sleeps
        assert _descendants(ignoring.pid) == []
        assert _ignores_sigint(ignoring.pid) and not _ignores_sigint(shell.pid)
    finally:
        for process in (shell, ignoring):
            process.kill()
            process.wait()


def test_the_slurm_request_kills_every_rank_on_a_bad_exit_and_asks_for_memory(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    text = _make_sbatch_string("python -m task", tmp_path, map_count=4,
                               **slurm_parameters(SlurmOptions(gpus=4, mem=64), parallel=2))
    assert "#SBATCH --mem=64GB" in text and "--kill-on-bad-exit=1" in text
    assert "#SBATCH --mem" not in _make_sbatch_string("python -m task", tmp_path, **slurm_parameters(SlurmOptions(), 1))


def test_executor_flags_take_their_defaults_from_slurm_options():
    import argparse
    from dataclasses import fields

    from pipeline.executors import add_executor_flags, slurm_options

    parser = argparse.ArgumentParser()
    add_executor_flags(parser)
    assert slurm_options(parser.parse_args([])) == SlurmOptions()
    assert slurm_options(parser.parse_args(["--slurm_mem", "32", "--slurm_partition", "gpu"])).mem == 32
    with pytest.raises(UserError, match="--slurm_mem positive"):
        slurm_options(parser.parse_args(["--slurm_mem", "0"]))
    assert {option.name for option in fields(SlurmOptions)} == {
        action.dest[len("slurm_"):] for action in parser._actions if action.dest.startswith("slurm_")}


def unset_for_the_test(monkeypatch, names) -> None:
    """Unset ``names`` and have each put back as it was after the test, set or not: delenv alone
    records nothing for a variable that is absent, so one the code under test then sets (RANK,
    WORLD_SIZE) would leak into every later test and make it wait for ranks that do not exist."""
    for name in names:
        monkeypatch.setenv(name, "")  # records the value before (or its absence) for the teardown
        monkeypatch.delenv(name)


def inside_a_local_task(monkeypatch, tasks: int, rank: int) -> None:
    """The environment submitit's local controller gives task ``rank`` of a job with ``tasks``."""
    unset_for_the_test(monkeypatch, DISTRIBUTED_VARIABLES)
    for name, value in {"EXECUTOR": "local", "LOCAL_JOB_ID": "123", "LOCAL_NTASKS": tasks, "LOCAL_LOCALID": rank,
                        "LOCAL_GLOBALID": rank, "LOCAL_NODEID": 0, "LOCAL_JOB_NUM_NODES": 1}.items():
        monkeypatch.setenv(f"SUBMITIT_{name}", str(value))


def test_a_single_task_drops_inherited_distributed_variables(monkeypatch):
    """A sweep started from a shell that ran torchrun (or sbatch exporting one) must not make a
    one-process task wait for ranks that do not exist."""
    import submitit

    inside_a_local_task(monkeypatch, tasks=1, rank=0)
    for name, value in {"MASTER_ADDR": "elsewhere", "MASTER_PORT": "29500", "RANK": "3", "WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    assert submitit.JobEnvironment().num_tasks == 1
    export_distributed_environment()
    assert not any(name in os.environ for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"))


def test_several_tasks_overwrite_inherited_distributed_variables(monkeypatch):
    """The port too: an inherited MASTER_PORT (a shell that ran torchrun, sbatch exporting it) would be
    shared by two multi-GPU tasks on one node. Each job draws its own from its id, the same on its
    every task."""
    inside_a_local_task(monkeypatch, tasks=2, rank=1)
    for name, value in {"RANK": "7", "WORLD_SIZE": "16", "MASTER_PORT": "29500", "MASTER_ADDR": "elsewhere"}.items():
        monkeypatch.setenv(name, value)
    unset_for_the_test(monkeypatch, ("LOCAL_RANK", "LOCAL_WORLD_SIZE"))
    export_distributed_environment()  # submitit's own export raises when RANK is already set
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
    first = os.environ["MASTER_PORT"]
    assert first != "29500" and os.environ["MASTER_ADDR"] != "elsewhere"
    inside_a_local_task(monkeypatch, tasks=2, rank=0)  # the same job's other task: the same port
    export_distributed_environment()
    assert os.environ["MASTER_PORT"] == first
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "124")  # another job on the node: another port
    export_distributed_environment()
    assert os.environ["MASTER_PORT"] != first


def inside_a_slurm_task(monkeypatch, node: int, local_rank: int, nodes: int = 2, per_node: int = 2) -> None:
    """The environment srun gives one task of a 2-node job with 2 tasks per node (SLURM_PROCID runs
    over every node's tasks, node by node)."""
    unset_for_the_test(monkeypatch, ("SUBMITIT_LOCAL_JOB_ID", "SUBMITIT_EXECUTOR", *DISTRIBUTED_VARIABLES))
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for name, value in {"JOB_ID": "4242_7", "NTASKS": nodes * per_node, "JOB_NUM_NODES": nodes, "NODEID": node,
                        "JOB_NODELIST": "gpu[017-018]", "PROCID": node * per_node + local_rank,
                        "LOCALID": local_rank}.items():
        monkeypatch.setenv(f"SLURM_{name}", str(value))


def test_a_two_node_task_gets_the_environment_torchrun_would_give_it(monkeypatch):
    """--slurm_nodes 2 --slurm_gpus 2: four ranks, two per node; every one rendezvouses at the first
    node on the same port, with its global and local rank and its node's rank, as torchrun
    --nnodes 2 --nproc_per_node 2 would set them."""
    assert slurm_parameters(SlurmOptions(nodes=2, gpus=2), parallel=4)["nodes"] == 2
    seen = {}
    for node in (0, 1):
        for local_rank in (0, 1):
            inside_a_slurm_task(monkeypatch, node, local_rank)
            monkeypatch.setenv("MASTER_PORT", "29500")  # inherited from the submitting shell: replaced
            export_distributed_environment()
            seen[node, local_rank] = {name: os.environ[name] for name in DISTRIBUTED_VARIABLES}
    assert [(e["RANK"], e["LOCAL_RANK"], e["GROUP_RANK"]) for e in seen.values()] == [
        ("0", "0", "0"), ("1", "1", "0"), ("2", "0", "1"), ("3", "1", "1")]
    for environment in seen.values():
        assert (environment["WORLD_SIZE"], environment["LOCAL_WORLD_SIZE"], environment["GROUP_WORLD_SIZE"]) == (
            "4", "2", "2")
        assert environment["MASTER_ADDR"] == "gpu017"
    ports = {environment["MASTER_PORT"] for environment in seen.values()}
    assert len(ports) == 1 and ports != {"29500"}


def test_several_nodes_need_a_gpu_each():
    with pytest.raises(UserError, match="several nodes need --slurm_gpus"):
        SlurmOptions(nodes=2, gpus=0).check()
    with pytest.raises(UserError, match="--slurm_nodes must be at least 1"):
        SlurmOptions(nodes=0).check()


@pytest.mark.parametrize("slurm, expected", [("3", 3), ("", None), ("0", None)])
def test_the_thread_count_is_the_allocations(monkeypatch, slurm, expected):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", slurm)
    assert allocated_cpus() == (expected or len(os.sched_getaffinity(0)))


def _job(tmp_path):
    from pipeline.config import RunConfig
    from pipeline.jobs import Job

    return Job(RunConfig(data_name="digits", out_dir=str(tmp_path)).resolve_defaults(), [("evaluate", None)])


def test_a_run_uses_the_threads_of_its_allocation(tmp_path, monkeypatch):
    import torch

    import pipeline.jobs

    from threadpoolctl import threadpool_info

    def blas_threads() -> set:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    seen = []
    # numpy's and scipy's BLAS pools follow torch's count: two runs at once with one thread each must
    # not start a BLAS thread per core each (OpenBLAS threads spin while they wait)
    monkeypatch.setattr(pipeline.jobs, "run_stage", lambda *args: seen.append((torch.get_num_threads(), blas_threads())))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    before, blas_before = torch.get_num_threads(), blas_threads()
    pipeline.jobs.run_job(_job(tmp_path), tmp_path)
    pipeline.jobs.run_job(_job(tmp_path), tmp_path, threads=2)
    assert seen == [(1, {1}), (2, {2})] and torch.get_num_threads() == before and blas_threads() == blas_before


def test_the_pools_a_stage_loads_later_are_limited_too():
    """In a fresh process (a grid worker), scipy's OpenBLAS and scikit-learn's OpenMP load only when
    a stage imports them: they must come up at the run's thread count, not at one thread per core."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; sys.path.insert(0, sys.argv[1])\n"
            "from utils.threads import cpu_threads\n"
            "with cpu_threads(1):\n"
            "    import sklearn.decomposition, scipy.sparse.linalg  # as AC and SPECTRE import them\n"
            "    from threadpoolctl import threadpool_info\n"
            "    print(json.dumps([[p['prefix'], p['num_threads']] for p in threadpool_info()]))\n")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parents[1])],
                          capture_output=True, text=True, check=True)
    pools = json.loads(done.stdout)
    prefixes = {prefix for prefix, _ in pools}
    assert "libscipy_openblas" in prefixes and "libgomp" in prefixes
    assert all(threads == 1 for _, threads in pools), pools


def test_a_refused_requeue_says_the_run_was_stopped_not_broken(tmp_path, monkeypatch):
    """submitit raises UncompletedJobError from its signal handler when Slurm stops a task it will
    not requeue; that is a stopped run that resumes, not a failed stage."""
    from submitit.core.utils import UncompletedJobError

    import pipeline.jobs

    def stopped(*args):
        raise UncompletedJobError("Job not requeued because: timed-out too many times.")

    monkeypatch.setattr(pipeline.jobs, "run_stage", stopped)
    with pytest.raises(UserError) as raised:
        pipeline.jobs.run_job(_job(tmp_path), tmp_path)
    message = str(raised.value)
    assert "was stopped by Slurm during its evaluate stage and not requeued" in message
    assert "run the same command again" in message and "failed" not in message
    assert not list(tmp_path.glob("*.failure*.json"))  # not recorded as failed: the next invocation goes on with it
    monkeypatch.setattr(pipeline.jobs, "run_stage", lambda *args: 1 / 0)  # a stage that is broken is recorded
    with pytest.raises(UserError):
        pipeline.jobs.run_job(_job(tmp_path), tmp_path)
    assert "ZeroDivisionError" in pipeline.jobs.recorded_failure(tmp_path, _job(tmp_path).config.run_name)


def test_a_failure_is_recorded_by_the_rank_it_happened_on_and_for_its_configuration(tmp_path, monkeypatch):
    """One rank's own failure (its GPU out of memory) is recorded by that rank, which the others
    are then stopped by; a failure recorded for other flags does not hold back the new ones."""
    from pipeline.jobs import forget_failure, record_failure, recorded_failure

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    record_failure(tmp_path, "run", "rank 1: CUDA out of memory", "hash-a")
    assert (tmp_path / "run.failure.rank1.json").is_file() and not (tmp_path / "run.failure.json").exists()
    assert recorded_failure(tmp_path, "run") == recorded_failure(tmp_path, "run", "hash-a") == \
        "rank 1: CUDA out of memory"
    assert recorded_failure(tmp_path, "run", "hash-b") is None  # the run's flags changed since
    forget_failure(tmp_path, "run")
    assert recorded_failure(tmp_path, "run") is None and not list(tmp_path.iterdir())


def test_local_jobs_share_the_cores_instead_of_each_taking_them_all():
    """--jobs 8 once gave every local job all the machine's cores (8× oversubscribed); each now gets
    an equal share, at least one, unless --threads fixes it."""
    from pipeline.executors import local_threads

    assert local_threads(16, 8) == 2 and local_threads(2, 2) == 1 and local_threads(2, 8) == 1
    assert local_threads(16, 1) == 16 and local_threads(4, 0) == 4
