"""The paths a user reaches first on a GPU node; skipped without CUDA (and the DDP ones without two
GPUs). Run them on a GPU machine with the README's command

    python -m pytest -m gpu -v -rA tests

which prints one PASSED/FAILED/SKIPPED line per path:

- one GPU: --amp --channels_last --compile trains a model that keeps the attack;
- DDP over NCCL equals one process (float64, --sync_bn, the gathered MMD²);
- --sync_bn --amp on NCCL with a rank that gets no rows ends, with float32 statistics;
- a killed torchrun run resumed on the same GPUs (bit for bit, --deterministic) and on one GPU;
- a local sweep whose jobs each train on their own GPU;
- (tests/test_benchmark.py) the benchmark on CUDA.
"""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT, free_port
from tests.test_ddp_edges import one_epoch

CUDA = torch.cuda.is_available()
GPUS = torch.cuda.device_count() if CUDA else 0
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]
two_gpus = pytest.mark.skipif(GPUS < 2, reason="needs 2 GPUs")

RUN = ["--data_name", "digits", "--width", "0.25", "--epochs", "4", "--train_subset", "600", "--milestones",
       "--no_progress", "--device", "cuda"]
KILLED_EPOCHS = 12  # the killed runs: enough epochs that a fast GPU does not finish before the kill lands


def _main(*argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=480,
                          env={**os.environ, **(env or {})})


def test_one_gpu_trains_with_amp_channels_last_and_compile(tmp_path):
    done = _main(*RUN, "--epochs", "10", "--amp", "--channels_last", "--compile", "--mlmmdr_lamb", "0.1", "--out_dir",
                 str(tmp_path))
    assert done.returncode == 0, done.stderr
    metrics = json.loads(next(tmp_path.glob("*/metrics.json")).read_text())
    assert metrics["collapsed_to_class"] is None and metrics["ba"] > 0.5 and metrics["asr"] > 0.5, metrics


def _nccl_rank(rank: int, port: int, out: str) -> None:
    from utils import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    context = distributed.from_env("cuda")
    try:
        device = torch.device("cuda", rank)
        results = {"exact": one_epoch(context, False, torch.float64, device, images=118),
                   "empty_rank_amp": one_epoch(context, True, torch.float32, device)}  # last batch: 1 row
        if rank == 0:
            torch.save(results, out)
    finally:
        distributed.shutdown()


@pytest.fixture(scope="module")
def nccl_results(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("nccl") / "states.pt"
    context = mp.spawn(_nccl_rank, args=(free_port(), str(out)), nprocs=2, join=False)
    deadline = time.time() + 300
    while not context.join(timeout=1):
        if time.time() > deadline:  # a hang in a collective: free both GPUs for the tests after this one
            for process in context.processes:
                process.kill()
            pytest.fail("a rank is still waiting after 300 s (a hang in a collective)")
    return torch.load(out, weights_only=True)


@two_gpus
def test_ddp_over_nccl_equals_one_process(nccl_results, monkeypatch):
    from utils.distributed import Context

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    single = one_epoch(Context(), False, torch.float64, torch.device("cuda", 0), images=118)
    difference = max((nccl_results["exact"][key] - single[key]).abs().max().item() for key in single
                     if single[key].is_floating_point())
    assert difference < 1e-9  # float64: sums in another order, ~1e-16 relative each (tests/test_ddp_edges.py)


@two_gpus
def test_sync_bn_amp_with_an_empty_rank_ends_with_float32_statistics(nccl_results):
    state = nccl_results["empty_rank_amp"]
    assert all(value.isfinite().all() for value in state.values() if value.is_floating_point())
    assert all(state[key].dtype == torch.float32 for key in state if key.endswith("running_mean"))


def _history(path) -> list:
    import csv

    with open(path) as handle:
        return [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(handle)]


def _torchrun(flags: list) -> list:
    """torchrun with a free rendezvous port of its own (--standalone), so that this test does not
    meet another job's on torchrun's default 29500."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "main.py", *flags]


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers, and wait until none is left. Torchrun starts each worker in a
    session of its own, so killing torchrun's process group would leave them training (or holding
    the run's lock): the workers are found below it and killed by pid."""
    from pipeline.executors import _descendants
    from tests.test_executors import alive

    pids = [process.pid, *_descendants(process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 30
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids), "a worker outlived the kill"


@two_gpus
def test_a_killed_ddp_run_resumes_on_the_same_gpus_and_on_one(tmp_path):
    flags = RUN + ["--epochs", str(KILLED_EPOCHS), "--mlmmdr_lamb", "0.3", "--sync_bn", "--deterministic"]
    name = "digits_vgg11_patched_mlmmdr_0.3_all_w0.25_n600"
    whole = subprocess.run(_torchrun(flags + ["--out_dir", str(tmp_path / "whole")]), cwd=ROOT, capture_output=True,
                           text=True, timeout=480)
    assert whole.returncode == 0, whole.stderr

    def killed_after_first_epoch(out_dir):
        log = out_dir.parent / f"{out_dir.name}.killed.log"  # the killed run's output, shown if it went wrong
        with open(log, "w") as handle:
            process = subprocess.Popen(_torchrun(flags + ["--out_dir", str(out_dir)]), cwd=ROOT, stdout=handle,
                                       stderr=subprocess.STDOUT)
            resume = out_dir / f".{name}.staging" / "resume.pt"
            deadline = time.time() + 300
            while not resume.exists() and process.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            _kill_tree(process)
        history = out_dir / f".{name}.staging" / "history.csv"
        assert history.is_file() and 1 <= len(_history(history)) < KILLED_EPOCHS, log.read_text()[-3000:]

    killed_after_first_epoch(tmp_path / "same")
    same = subprocess.run(_torchrun(flags + ["--out_dir", str(tmp_path / "same"), "--resume"]), cwd=ROOT,
                          capture_output=True, text=True, timeout=480)
    assert same.returncode == 0, same.stderr
    assert _history(tmp_path / "same" / name / "history.csv") == _history(tmp_path / "whole" / name / "history.csv")

    killed_after_first_epoch(tmp_path / "one")
    one = _main(*flags, "--out_dir", str(tmp_path / "one"), "--resume", env={"CUDA_VISIBLE_DEVICES": "0"})
    assert one.returncode == 0, one.stderr  # --sync_bn and the global MMD²: the same run on one GPU
    assert re.search(rf"^{name}: BA=", one.stdout, re.M)
    assert len(_history(tmp_path / "one" / name / "history.csv")) == KILLED_EPOCHS


def _device_uuid() -> str:
    import torch as local_torch

    return str(local_torch.cuda.get_device_properties(0).uuid)


@two_gpus
def test_a_local_sweep_trains_each_job_on_its_own_gpu(tmp_path, monkeypatch):
    from pipeline.executors import GpuSlots, make_executor, run_local

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs unpickle this module's function, wherever pytest ran

    seen = run_local([(f"job{index}", _device_uuid) for index in range(2)], make_executor("local", tmp_path),
                     parallel=2, gpus=GpuSlots.of_this_machine())
    assert len(set(seen.values())) == 2
    done = subprocess.run([sys.executable, "experiments/sweep.py", "--attack_name", "patched", "blended",
                           "--flags", f"--width 0.125 --epochs 1 --train_subset 200 --device cuda --out_dir {tmp_path}",
                           "--jobs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stderr
    resolved = [json.loads(path.read_text())["resolved"] for path in tmp_path.glob("digits_*/config.json")]
    assert len(resolved) == 2 and len(list(tmp_path.glob("digits_*/model.pt"))) == 2
    assert {entry["device"] for entry in resolved} <= {"cuda", "cuda:0"}  # each job sees its one GPU as the first
    assert len({entry["gpu"]["uuid"] for entry in resolved}) == 2  # … and they were two different cards
