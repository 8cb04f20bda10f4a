"""DistributedDataParallel on the CPU (gloo, 2 processes): three steps of DDP equal three steps of
one process on the same global batches, for RBT and for ML-MMDR with the all-gathered MMD; and
torchrun end to end, killed and resumed.

The equality is checked in float64 (model and inputs). In float32 the two computations differ by
the rounding of sums taken in another order, which depends on the CPU's kernels (AVX-512, AVX2,
SSE4.1 block their sums differently): 3.5e-5 on one machine, under 1e-5 on another, so no float32
bound is both safe everywhere and tight enough to catch a wrong gradient."""
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import leave_spawned_rank
from utils.distributed import Context

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {  # name: (model, global batch, λ, sync_bn, mmd_sync)
    "rbt_sync_bn": ("vgg11", 64, 0.0, True, "global"),
    "mlmmdr_sync_bn": ("vgg11", 64, 0.3, True, "global"),
    # An odd batch: the ranks' shards differ in size (32 and 31 rows). WRN has no max-pool, whose
    # argmax can flip between two near-equal activations when the last bit differs (in float64 two
    # activations would have to agree to ~1e-13, which leaves the VGG cases safe too).
    "mlmmdr_sync_bn_uneven": ("wrn16_1", 63, 0.3, True, "global"),
    "mlmmdr_no_sync_bn": ("vgg11", 64, 0.3, False, "global"),
    "mlmmdr_mmd_local": ("vgg11", 64, 0.3, True, "local"),
}
STEPS = 3

# The DDP and one-process weights after STEPS steps in float64 agree to this. They are the same
# arithmetic in another order: two ranks sum each shard's convolution-weight gradients, BatchNorm
# statistics and cross-entropy apart and add the halves (the all-reduce), and the kernels block
# 32-row and 64-row sums differently. A sum of n terms taken in another order moves by at most
# n·u·Σ|terms|, typically √n·u·Σ|terms| (rounding errors of either sign; u = 2⁻⁵³ ≈ 1.1e-16).
# The first layer's weight gradient sums n = 64·32·32 = 65 536 terms: ≈ 256·u ≈ 3e-14 (at most
# 7e-12) of the gradient's scale, which is ≲ 1 here (the weights move ≈ 0.3 in three steps at
# lr 0.05). Backpropagation through the layers and BatchNorm's division by the batch's standard
# deviation amplify that by a modest factor, and with momentum 0.9 three steps add at most
# (2.71 + 1.9 + 1)·lr ≈ 0.28 of the gradients' error to the weights: 1e-14 to 1e-12 expected,
# 2e-14 to 3e-13 measured under AVX-512, AVX2 and SSE4.1 kernels. The bound leaves 1000× headroom
# above that and lies 1e7× below what another computation gives (unsynchronised BatchNorm or each
# rank's own MMD² move the weights by > 1e-2; the two tests below); a single float32 step in the
# loss (≈ 3e-9 measured) already exceeds it.
FLOAT64_BOUND = 1e-9


def three_steps(context: Context, model_name: str, batch_size: int, lamb: float, sync_bn: bool,
                mmd_sync: str) -> tuple:
    """(state dict, whether the MMD term acted in every step) after STEPS steps on digits, with the
    model and its inputs in float64 (the initial weights are float32's, converted exactly)."""
    import datasets
    import models
    from attacks import build as build_attack
    from attacks.poisoning import PoisonedData
    from training import Trainer, TrainSettings

    data = datasets.build("digits", seed=0)
    torch.manual_seed(0)
    model = models.build(model_name, num_classes=10, width=0.125).double()
    poisoned = PoisonedData(data.train_x, data.train_y, build_attack("patched"), poison_ratio=0.2)
    settings = TrainSettings(batch_size=batch_size, mlmmdr_lamb=lamb, sync_bn=sync_bn, mmd_sync=mmd_sync, lr=0.05,
                             progress=False)
    trainer = Trainer(model, poisoned, settings, torch.device("cpu"), context)
    active = True
    for _, batch in zip(range(STEPS), poisoned.batches(batch_size, 0, context)):
        trainer.step(dataclasses.replace(batch, x=batch.x.double()))  # batches are built in float32
        active &= trainer.regularizer is None or trainer.regularizer.last_active
    trainer.close()
    return {key: value.detach().clone() for key, value in model.state_dict().items()}, active


def _rank_main(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from utils import distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results = {name: three_steps(Context(rank, 2), *setting) for name, setting in SETTINGS.items()}
        if rank == 0:
            torch.save(results, out)
    finally:
        distributed.shutdown()  # frees the group before the interpreter exits
    leave_spawned_rank()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("ddp")
    out = folder / "states.pt"
    mp.spawn(_rank_main, args=(str(folder / "store"), str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def _max_difference(a: dict, b: dict) -> float:
    return max((a[key].double() - b[key].double()).abs().max().item() for key in a if a[key].is_floating_point())


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["rbt_sync_bn", "mlmmdr_sync_bn", "mlmmdr_sync_bn_uneven"])
def test_ddp_with_sync_bn_equals_one_process(ddp_results, name):
    import models

    single, single_active = three_steps(Context(), *SETTINGS[name])
    ddp, ddp_active = ddp_results[name]
    assert single_active and ddp_active  # the MMD term acted in every step (trivially for λ = 0)
    torch.manual_seed(0)
    initial = models.build(SETTINGS[name][0], num_classes=10, width=0.125).state_dict()
    assert _max_difference(single, initial) > 1e-3  # the steps moved the weights
    assert _max_difference(ddp, single) < FLOAT64_BOUND


@pytest.mark.numerics
def test_without_sync_bn_each_rank_normalises_its_shard(ddp_results):
    """The equality above needs --sync_bn: per-shard BatchNorm statistics give other weights."""
    single, _ = three_steps(Context(), *SETTINGS["mlmmdr_sync_bn"])
    assert _max_difference(ddp_results["mlmmdr_no_sync_bn"][0], single) > 1e-4


@pytest.mark.numerics
def test_mmd_sync_local_is_another_estimator(ddp_results):
    """Each rank's own MMD² (half the samples per group) moves the weights elsewhere than the
    global batch's MMD², which the single process computes."""
    single, _ = three_steps(Context(), *SETTINGS["mlmmdr_sync_bn"])
    local = ddp_results["mlmmdr_mmd_local"][0]
    assert all(value.isfinite().all() for value in local.values() if value.is_floating_point())
    assert _max_difference(local, single) > 1e-4


def test_shards_cover_the_batch_in_order():
    sizes = [Context(rank, 3).shard(10) for rank in range(3)]
    assert [(part.start, part.stop) for part in sizes] == [(0, 4), (4, 7), (7, 10)]
    assert Context(1, 3).shard_sizes(10) == [4, 3, 3]


def test_single_process_collectives_are_identities():
    context = Context()
    rows = torch.arange(6.0).reshape(3, 2)
    assert context.gather_rows(rows, 3) is rows and context.all_true(True) and not context.all_true(False)
    assert context.agree(lambda: 7) == 7 and os.environ.get("WORLD_SIZE", "1") == "1"


def _torchrun(args: list, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "main.py", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def _history(path: Path) -> list:
    """The history's rows without the wall time, which differs between runs."""
    with open(path) as handle:
        return [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(handle)]


def test_killed_ddp_run_resumes_to_the_uninterrupted_metrics(tmp_path):
    """torchrun with 2 gloo ranks: killed (SIGKILL, every process) after its first epoch, then
    --resume: the same history and BA/ASR as a run never interrupted, and the same closing line."""
    flags = ["--data_name", "digits", "--width", "0.125", "--epochs", "4", "--train_subset", "600",
             "--mlmmdr_lamb", "0.3", "--sync_bn", "--device", "cpu", "--no_progress"]
    whole = _torchrun(flags + ["--out_dir", str(tmp_path / "whole")])
    whole_output = whole.communicate(timeout=300)[0]
    assert whole.returncode == 0, whole_output
    name = "digits_vgg11_patched_mlmmdr_0.3_all_w0.125_n600"

    out_dir = tmp_path / "killed"
    killed = _torchrun(flags + ["--out_dir", str(out_dir)])
    resume_file = out_dir / f".{name}.staging" / "resume.pt"
    deadline = time.time() + 120
    while not resume_file.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    subprocess.run(["pkill", "-9", "-f", f"out_dir {out_dir}( |$)"], check=False)
    killed.communicate(timeout=60)
    interrupted = _history(out_dir / f".{name}.staging" / "history.csv")
    assert 1 <= len(interrupted) < 4 and not (out_dir / name).exists()

    resumed = _torchrun(flags + ["--out_dir", str(out_dir), "--resume"])
    resumed_output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, resumed_output
    assert _history(out_dir / name / "history.csv") == _history(tmp_path / "whole" / name / "history.csv")
    whole_metrics = json.loads((tmp_path / "whole" / name / "metrics.json").read_text())
    resumed_metrics = json.loads((out_dir / name / "metrics.json").read_text())
    assert (resumed_metrics["ba"], resumed_metrics["asr"]) == (whole_metrics["ba"], whole_metrics["asr"])
    # one closing line, from rank 0, and the resumed run's is the uninterrupted one's but for the seconds
    # and the directory (the tiny model may collapse on some CPUs' kernels: the note is then part of both)
    closing = re.compile(rf"^{name}: BA=\d\.\d{{4}} ASR=\d\.\d{{4}} \(ML-MMDR, 4 epochs, \d+s(, collapsed: [^)]+)?\) -> ",
                         re.M)
    lines = [[re.sub(r", \d+s", ", Ns", match.group(0)) for match in closing.finditer(output)]
             for output in (whole_output, resumed_output)]
    assert len(lines[0]) == 1 and lines[1] == lines[0]
