"""DistributedDataParallel on the CPU (gloo, 2 processes): three steps of DDP equal three steps of
one process on the same global batches, for RBT and for ML-MMDR with the all-gathered MMD; the
global MMD gathers only the rows it uses, with the loss and gradients of gathering every row; and
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


def _in_gloo_group(rank: int, store: str, out: str, compute) -> None:
    """One spawned rank of a 2-rank gloo group: ``compute(context)``'s results saved to ``out``.<rank>,
    the group freed before the interpreter exits."""
    import torch.distributed as dist

    from utils import distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        torch.save(compute(Context(rank, 2)), f"{out}.{rank}")
    finally:
        distributed.shutdown()
    leave_spawned_rank()


def _three_steps_of_each_setting(context: Context) -> dict:
    return {name: three_steps(context, *setting) for name, setting in SETTINGS.items()}


def _rank_main(rank: int, store: str, out: str) -> None:
    _in_gloo_group(rank, store, out, _three_steps_of_each_setting)


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("ddp")
    out = folder / "states.pt"
    mp.spawn(_rank_main, args=(str(folder / "store"), str(out)), nprocs=2, join=True)
    return torch.load(f"{out}.0", weights_only=True)


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


def _step_gathers(context: Context) -> dict:
    """One ML-MMDR step (float64, --sync_bn) of the first global batch of 64, with every tensor this
    rank hands to torch.distributed.all_gather recorded (the real collective still runs)."""
    import torch.distributed as dist

    import datasets
    import models
    from attacks import build as build_attack
    from attacks.poisoning import PoisonedData
    from training import Trainer, TrainSettings

    data = datasets.build("digits", seed=0)
    torch.manual_seed(0)
    model = models.build("vgg11", num_classes=10, width=0.125).double()
    poisoned = PoisonedData(data.train_x, data.train_y, build_attack("patched"), poison_ratio=0.2)
    trainer = Trainer(model, poisoned, TrainSettings(batch_size=64, mlmmdr_lamb=0.3, sync_bn=True, progress=False),
                      torch.device("cpu"), context)
    batch = next(iter(poisoned.batches(64, 0, context)))
    sent, all_gather = [], dist.all_gather

    def spy(tensor_list, tensor, *args, **kwargs):
        sent.append(tuple(tensor.shape))
        return all_gather(tensor_list, tensor, *args, **kwargs)

    dist.all_gather = spy
    try:
        trainer.step(dataclasses.replace(batch, x=batch.x.double()))
    finally:
        dist.all_gather = all_gather
    active = trainer.regularizer.last_active
    trainer.close()
    return {"sent": sent, "active": active, "benign": batch.benign_target_mask(0), "poisoned": batch.poisoned}


def _whole_batch_gather_loss(regularizer, benign, poisoned, context: Context):
    """The global MMD as it was computed before gather_used_rows: every level's whole shard
    all-gathered, then the benign and poisoned rows picked from the global batch."""
    from regularizers.mmd import pooled_mmd2

    rows = torch.cat([benign.nonzero().flatten(), poisoned.nonzero().flatten()])
    sizes = context.shard_sizes(len(benign))
    per_level = [pooled_mmd2(context.gather_rows(feats, sizes).index_select(0, rows), int(benign.sum()))
                 for feats in regularizer.features.values()]
    regularizer.features.clear()
    return torch.stack(per_level).mean()


def _used_rows_equal_whole_batch(context: Context, dtype, batch_size: int) -> bool:
    """Whether the regulariser's loss and this rank's parameter gradients equal, bit for bit, those
    of the whole-batch gather. The masks put most used rows on rank 0, so the parts are padded."""
    import models
    from regularizers import MultiLevelMMD

    torch.manual_seed(0)
    model = models.build("vgg11", num_classes=10, width=0.125).to(dtype)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(batch_size, 3, 32, 32, generator=generator, dtype=dtype)
    benign, poisoned = torch.zeros(batch_size, dtype=torch.bool), torch.zeros(batch_size, dtype=torch.bool)
    benign[[0, 3, 4, 9, 20, 40, 50]], poisoned[[1, 2, 5, 6, 7, 11, 25, 30, 45]] = True, True
    outcomes = []
    for whole in (True, False):
        regularizer = MultiLevelMMD(model)
        model.zero_grad()
        model(x[context.shard(batch_size)])
        loss = (_whole_batch_gather_loss(regularizer, benign, poisoned, context) if whole
                else regularizer.loss(benign, poisoned, context)[0])
        loss.backward()
        outcomes.append([loss.detach()] + [parameter.grad.clone() for parameter in model.parameters()
                                           if parameter.grad is not None])  # the layers up to s3
        regularizer.remove()
    return all(torch.equal(a, b) for a, b in zip(*outcomes))


def _mixed_dtypes_equal_whole_batch(context: Context) -> bool:
    """gather_used_rows on levels of two dtypes (one buffer each) against the whole-batch gather:
    the same pooled rows and the same gradients on this rank's shard, bit for bit."""
    from regularizers.multilevel import gather_used_rows

    generator = torch.Generator().manual_seed(2)
    batch_size = 13
    shard = context.shard(batch_size)
    features = {"a": torch.randn(batch_size, 3, 4, generator=generator, dtype=torch.float64)[shard],
                "b": torch.randn(batch_size, 5, generator=generator).to(torch.bfloat16)[shard],
                "c": torch.randn(batch_size, 2, 2, generator=generator)[shard]}
    weights = {level: torch.randn(feats[0].numel(), generator=generator) for level, feats in features.items()}
    rows = torch.tensor([12, 0, 5, 6, 1, 11])
    outcomes = []
    for whole in (True, False):
        leaves = {level: feats.clone().requires_grad_() for level, feats in features.items()}
        if whole:
            sizes = context.shard_sizes(batch_size)
            pooled = {level: context.gather_rows(feats, sizes).index_select(0, rows).flatten(1)
                      for level, feats in leaves.items()}
        else:
            pooled = gather_used_rows(leaves, rows, batch_size, context)
        sum((pooled[level].float() @ weights[level]).cumsum(0).sum() for level in leaves).backward()
        outcomes.append([pooled[level].detach() for level in leaves] + [leaves[level].grad for level in leaves])
    return all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(*outcomes))


def _swd_global_equals_one_process(context: Context) -> bool:
    """The sliced Wasserstein regulariser on this rank's shard under DDP (its groups gathered from
    every rank) against one process on the whole batch: the same loss (float64, BatchNorm in
    evaluation mode so that a shard's features are the whole batch's rows)."""
    import models
    from regularizers.wasserstein import MultiLevelSWD
    from utils.distributed import SINGLE

    torch.manual_seed(0)
    model = models.build("vgg11", num_classes=10, width=0.125).double().eval()
    x = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    benign, poisoned = torch.zeros(24, dtype=torch.bool), torch.zeros(24, dtype=torch.bool)
    benign[[0, 4, 13, 20]], poisoned[[2, 3, 14, 15, 22]] = True, True
    values = []
    for sharded in (False, True):
        regularizer = MultiLevelSWD(model, seed=5)
        with torch.no_grad():
            model(x[context.shard(24)] if sharded else x)
        values.append(regularizer.loss(benign, poisoned, context if sharded else SINGLE)[0])
        regularizer.remove()
    return bool(values[0] > 0) and torch.allclose(values[0], values[1], rtol=1e-10, atol=0)


def _gather_checks(context: Context) -> dict:
    return {"step": _step_gathers(context), "mixed_dtypes": _mixed_dtypes_equal_whole_batch(context),
            "swd_global": _swd_global_equals_one_process(context),
            "equal": {f"{str(dtype)[6:]}_{size}": _used_rows_equal_whole_batch(context, dtype, size)
                      for dtype, size in ((torch.float64, 64), (torch.float64, 63), (torch.float32, 63))}}


def _rank_gathers(rank: int, store: str, out: str) -> None:
    _in_gloo_group(rank, store, out, _gather_checks)


@pytest.fixture(scope="module")
def gathers(tmp_path_factory):
    """Each rank's results of the gather checks above, on 2 gloo ranks."""
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("gathers")
    out = folder / "gathers.pt"
    mp.spawn(_rank_gathers, args=(str(folder / "store"), str(out)), nprocs=2, join=True)
    return [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]


def _tap_widths() -> list:
    """Features per sample at each of VGG-11's levels s1, s2, s3 (width 0.125, a 32×32 image)."""
    import models

    model = models.build("vgg11", num_classes=10, width=0.125)
    shapes = []
    for module in models.tap_modules(model).values():
        module.register_forward_hook(lambda module, inputs, output: shapes.append(output[0].numel()))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    return shapes


def test_the_global_mmd_gathers_only_the_rows_it_uses(gathers):
    """One ML-MMDR step makes one all-gather, of every level's features side by side, and each
    rank sends its benign target-class and poisoned rows (padded to the rank with the most), not
    its whole shard of 32 rows."""
    for rank, results in enumerate(gathers):
        step = results["step"]
        assert step["active"]
        used = torch.cat([step["benign"].nonzero().flatten(), step["poisoned"].nonzero().flatten()])
        per_rank = [int(((used >= start) & (used < start + 32)).sum()) for start in (0, 32)]
        assert 4 <= sum(per_rank) < 32  # the MMD uses a fraction of the batch's 64 rows
        assert step["sent"] == [(max(per_rank), sum(_tap_widths()))], (rank, per_rank, step["sent"])


def test_gather_traffic_counts_the_bytes_a_step_sends(gathers):
    from regularizers.multilevel import gather_traffic

    step = gathers[0]["step"]
    (rows, width), = step["sent"]
    row_bytes = sum(_tap_widths()) * 8  # float64
    assert gather_traffic(row_bytes, step["benign"], step["poisoned"], 2) == {"all_rows": 32 * row_bytes,
                                                                              "used_rows": rows * row_bytes}
    assert gather_traffic(row_bytes, step["benign"], torch.zeros(64, dtype=torch.bool), 2)["used_rows"] == 0


@pytest.mark.parametrize("case", ["float64_64", "float64_63", "float32_63"])
def test_gathering_the_used_rows_gives_the_whole_batch_gathers_loss_and_gradients(gathers, case):
    assert [results["equal"][case] for results in gathers] == [True, True]


def test_levels_of_two_dtypes_travel_apart_with_the_same_values(gathers):
    assert [results["mixed_dtypes"] for results in gathers] == [True, True]


def test_the_sliced_wasserstein_term_under_ddp_is_the_global_batchs(gathers):
    assert all(rank["swd_global"] for rank in gathers)


def test_shards_cover_the_batch_in_order():
    sizes = [Context(rank, 3).shard(10) for rank in range(3)]
    assert [(part.start, part.stop) for part in sizes] == [(0, 4), (4, 7), (7, 10)]
    assert Context(1, 3).shard_sizes(10) == [4, 3, 3]


def test_single_process_collectives_are_identities():
    context = Context()
    rows = torch.arange(6.0).reshape(3, 2)
    assert context.gather_rows(rows, [3]) is rows and context.all_true(True) and not context.all_true(False)
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
    closing = re.compile(rf"^{name}: BA=\d\.\d{{4}} ASR=\d\.\d{{4}} \(ML-MMDR, algorithm1: split CE, auto batches, "
                         rf"add poisoned images, 4 epochs, \d+s(, collapsed: [^)]+)?\) -> ", re.M)
    lines = [[re.sub(r", \d+s", ", Ns", match.group(0)) for match in closing.finditer(output)]
             for output in (whole_output, resumed_output)]
    assert len(lines[0]) == 1 and lines[1] == lines[0]
