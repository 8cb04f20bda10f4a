import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)
# torch.compile's on-disk cache does not key its kernels on the CPU kernels in use (ATEN_CPU_CAPABILITY,
# ONEDNN_MAX_CPU_ISA): a backward compiled by an earlier session crashed when reused under others. Each
# session, and the runs it spawns, compiles into a cache of its own, so the suite is hermetic wherever it runs.
INDUCTOR_CACHE = tempfile.mkdtemp(prefix="ml-mmdr-inductor-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = INDUCTOR_CACHE
atexit.register(shutil.rmtree, INDUCTOR_CACHE, ignore_errors=True)


# What makes a process think it is one rank of a DDP run: left in the environment by one test, it would
# make every later one in this session (and every process it starts) wait for ranks that do not exist
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
                    "GROUP_WORLD_SIZE")


@pytest.fixture(autouse=True)
def no_launch_variables_left_behind():
    before = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    yield
    after = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
    left = {name: value for name, value in after.items() if value != before[name]}
    for name, value in before.items():  # put back, so that one leak fails one test, not the rest of the session
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    assert not left, f"the test left {left} in the environment; set them with monkeypatch (see test_executors)"


def free_port() -> int:
    """A TCP port nobody listens on now, for a test's DDP rendezvous (MASTER_PORT)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def leave_spawned_rank() -> None:
    """End a spawned rank whose run finished cleanly without the interpreter's finalization, where
    gloo's threads have aborted (SIGABRT) a rank whose results were already written; freeing the
    group in time is utils.distributed.shutdown's concern, not what a test that spawns ranks checks.
    Call it after the shutdown, outside any ``finally``: a rank that raised must still report."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture(scope="session")
def digits():
    import datasets

    return datasets.build("digits", seed=0)


# No learning-rate decay (an empty --milestones): four epochs at lr 0.01 give the tiny model its
# backdoor (ASR ≈ 1) while it barely classifies (BA ≈ 0.5): a checkpoint for the tests that need
# one, not a model to read a known answer from (Neural Cleanse's trains its own, test_defend.py).
TINY_RUN = ["--data_name", "digits", "--width", "0.25", "--epochs", "4", "--train_subset", "600",
            "--milestones", "--no_progress"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A small backdoored digits run (RBT), trained once per test session: (argv, run_dir)."""
    import main
    from pipeline.cli import run_cli

    out_dir = tmp_path_factory.mktemp("runs")
    argv = TINY_RUN + ["--out_dir", str(out_dir)]
    assert run_cli(main.main, argv) == 0
    return argv, out_dir / "digits_vgg11_patched_w0.25_n600"


# Small pools, and STRIP with 10 superimpositions over small held-out sets (its default 100 over
# 500 costs a minute of forward passes a run on this CPU)
EVAL_SMALL = ["--num_samples", "60", "--pool_sizes", "40", "--pool_ratios", "1.0", "--swd_projections", "20",
              "--strip_n", "10", "--strip_overlay_pool", "50", "--strip_fit_samples", "50", "--class_samples", "200",
              "--clean_reserve", "200", "--badexpert_clean_images", "200", "--badexpert_fit_samples", "100",
              "--badexpert_finetune_epochs", "2", "--asset_offset_steps", "20"]


@pytest.fixture(scope="session")
def tiny_sweep(tiny_run, tmp_path_factory):
    """A copy of the tiny RBT run plus ML-MMDR and SL-MMDR at λ = 0.1, all evaluated: their directory."""
    import shutil

    import evaluate
    import main
    from pipeline.cli import run_cli

    argv, rbt_dir = tiny_run
    out_dir = tmp_path_factory.mktemp("sweep")
    shutil.copytree(rbt_dir, out_dir / rbt_dir.name, ignore=shutil.ignore_patterns("evaluation.*"))
    argv = argv[:-1] + [str(out_dir)]
    run_dir = out_dir / rbt_dir.name
    for layer in ("all", "last"):
        assert run_cli(main.main, argv + ["--mlmmdr_lamb", "0.1", "--mlmmdr_layer", layer]) == 0
    assert run_cli(evaluate.main, ["--all_runs", str(run_dir.parent), "--no_progress"] + EVAL_SMALL) == 0
    return run_dir.parent
