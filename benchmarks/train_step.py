#!/usr/bin/env python
"""Time one training step three ways, and MMD² ours vs the n×n×d broadcast; prints one JSON object.

    python benchmarks/train_step.py [--model_name vgg11] [--batch_size 256] [--device cpu|cuda]

bare_step_s:   forward + backward + SGD step on a batch assembled beforehand, already on the device
rbt_step_s:    our full RBT step: batch assembly from the in-memory uint8 set, batched crop/flip,
               triggers on the poisoned rows, then the same step (λ = 0)
mlmmdr_step_s: the same with λ = 0.1 at all levels (s1, s2, s3)
regularizer_step_s: the same step with each regulariser of regularizers/registry.py at all levels
               (mmd is mlmmdr_step_s; adv_embed with its discriminators built), timed in the same rounds;
               ratio_vs_rbt divides each by rbt_step_s
adv_embed_discriminator_s: what adversarial embedding adds before each epoch: its discriminators'
               training (--adv_embed_d_epochs each, the reference's 100) on the poisoned images' features,
               timed once;
               adv_embed_epoch_ratio_vs_rbt is an epoch of digits with it against an RBT epoch
The three are timed in interleaved rounds (median over rounds) so drift hits them alike.

images_per_s:  the ML-MMDR step (λ = 0.1, all levels) through each fast path of --paths: plain,
               amp (bf16 autocast), channels_last, compile (torch.compile, compiled before timing),
               all (the three together); uint8 data on the device in every case
ddp_images_per_s: the same step under DDP on --device (global batch --batch_size, --sync_bn, the
               all-gathered MMD), against one process's plain rate on that device: on the CPU
               --ddp_ranks gloo processes; on CUDA NCCL with one process per visible GPU,
               min(--ddp_ranks, GPUs) of them, and ddp_skipped says why when fewer than 2 GPUs are
               visible. ddp_device names the device, so no rate is ever divided by one measured elsewhere.
mmd_gather:    bytes one rank receives per step in the global MMD's all-gather (--mmd_sync global; it sends
               as many back in the backward's reduce-scatter) on ``ranks`` ranks (those of the DDP
               timing, else max(--ddp_ranks, 2)): all_rows_bytes when every rank sends its whole shard
               of every level, one collective per level (the scheme before), used_rows_bytes when it
               sends the benign target-class and poisoned rows alone, the levels side by side in one
               collective (regularizers.multilevel.gather_used_rows); the mean over the batches the
               DDP timing steps through, computed from the levels' shapes and the batches' masks
               (regularizers.multilevel.gather_traffic), without a process group
What the paper's CIFAR-10 grid costs on GPUs (training, per-epoch BA/ASR and the evaluate stage,
on N GPUs) is benchmarks/grid_hours.py.

mmd_*: MMD² (GMK2) of n = 256 pooled samples (128 + 128) of d = 16384 features (VGG-11's s1
size), forward only: ours builds the n×n Gram matrix, the broadcast formulation (the authors'
prototype) builds the n×n×d difference tensor. Peak memory is measured in a fresh process
(CPU: peak RSS increase; CUDA: torch.cuda.max_memory_allocated).
"""
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from utils.params import param  # noqa: E402


def mmd2_broadcast(x: torch.Tensor, y: torch.Tensor, sigmas=(0.25, 0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """The n×n×d formulation, for comparison only: pairwise differences materialised."""
    pooled = torch.cat([x, y])
    squared = ((pooled[None, :, :] - pooled[:, None, :]) ** 2).sum(2)
    count = len(pooled)
    beta = squared.detach().sum() / (count * count - count)
    k = sum(torch.exp(-squared / (sigma * beta)) for sigma in sigmas)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_cpu_peak_kb() -> int:
    """Reset the process's peak RSS to its current RSS (Linux clear_refs 5); returns it in KB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kb("VmRSS")
    except OSError:  # not Linux or not permitted: fall back to the lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu_peak_kb() -> int:
    try:
        return _status_kb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def mmd_child(which: str, n: int, d: int, device_name: str) -> dict:
    """Runs in a fresh process: time and peak memory of one MMD² implementation."""
    from regularizers import mmd2

    device = torch.device(device_name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n // 2, d, generator=gen).to(device)
    y = (torch.randn(n // 2, d, generator=gen) + 0.1).to(device)
    function = mmd2 if which == "ours" else mmd2_broadcast
    function(x[:4], y[:4])  # warm up kernels and allocator on a small input
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _reset_cpu_peak_kb()
    started = time.perf_counter()
    value = function(x, y)
    _sync(device)
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak_mb = (_cpu_peak_kb() - base) / 1024
    return {"seconds": seconds, "peak_mb": peak_mb, "value": float(value)}


def run_mmd(which: str, n: int, d: int, device: str) -> dict:
    code = (f"import json,sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"import train_step; print(json.dumps(train_step.mmd_child({which!r}, {n}, {d}, {device!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_steps(args) -> dict:
    import datasets
    import models
    from attacks import build as build_attack
    from attacks.poisoning import PoisonedData
    from training import Trainer, TrainSettings

    device = torch.device(args.device)
    torch.manual_seed(0)
    data = datasets.build("digits")
    attack = build_attack(args.attack_name)
    poisoned = PoisonedData(data.train_x, data.train_y, attack, device=device)
    trainers = {}
    for kind, lamb, regularizer, params in REGULARIZED:
        params = {**params, "adv_embed_d_epochs": args.adv_embed_d_epochs} if regularizer == "adv_embed" else params
        config = TrainSettings(mlmmdr_lamb=lamb, batch_size=args.batch_size, progress=False, regularizer=regularizer,
                               regularizer_params=params)
        model = models.build(args.model_name, num_classes=10, width=args.width).to(device)
        trainers[kind] = Trainer(model, poisoned, config, device)
    _sync(device)
    started = time.perf_counter()
    trainers["adv_embed"].regularizer.start_epoch(trainers["adv_embed"], 0)  # its discriminators, trained once
    _sync(device)
    discriminator_s = time.perf_counter() - started
    bare_model = models.build(args.model_name, num_classes=10, width=args.width).to(device)
    bare_opt = torch.optim.SGD(bare_model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    ready = poisoned.make_batch(torch.randint(0, len(poisoned), (args.batch_size,), generator=generator))
    ready_x, ready_y = ready.x, ready.y  # the same kind of images, assembled once, outside the timing
    criterion = torch.nn.CrossEntropyLoss()

    def bare():
        loss = criterion(bare_model(ready_x), ready_y)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    def full(kind):
        positions = torch.randint(0, len(poisoned), (args.batch_size,), generator=generator)
        trainers[kind].step(poisoned.make_batch(positions))

    steps = {"bare": bare, **{kind: (lambda kind=kind: full(kind)) for kind in trainers}}
    times = {name: [] for name in steps}
    for round_index in range(args.warmup + args.steps):
        for name, step in steps.items():
            _sync(device)
            started = time.perf_counter()
            step()
            _sync(device)
            if round_index >= args.warmup:
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {**medians, "adv_embed_discriminator": discriminator_s,
            "epoch_steps": poisoned.num_batches(args.batch_size)}


# (timing key, λ, regulariser, its options): RBT, then each regulariser at all levels
REGULARIZED = (("rbt", 0.0, "mmd", {}), ("mlmmdr", 0.1, "mmd", {}), ("wasserstein", 1.0, "wasserstein", {}),
               ("adv_embed", 10.0, "adv_embed", {"adv_embed_warmup": 0}))


PATHS = {"plain": {}, "amp": {"amp": True}, "channels_last": {"channels_last": True}, "compile": {"compile": True},
         "all": {"amp": True, "channels_last": True, "compile": True}}


def _step_rate(trainer, poisoned, batch_size: int, steps: int, warmup: int, device) -> float:
    """Images per second of ``trainer``'s steps on batches assembled from the uint8 set on the device."""
    generator = torch.Generator().manual_seed(0)
    context = trainer.context
    batches = [poisoned.make_batch(torch.randint(0, len(poisoned), (batch_size,), generator=generator)).shard(context)
               for _ in range(warmup + steps)]
    for batch in batches[:warmup]:
        trainer.step(batch)
    _sync(device)
    started = time.perf_counter()
    for batch in batches[warmup:]:
        trainer.step(batch)
    _sync(device)
    return batch_size * steps / (time.perf_counter() - started)


def _trainer(args, device, context=None, **settings):
    import datasets
    import models
    from attacks import build as build_attack
    from attacks.poisoning import PoisonedData
    from training import Trainer, TrainSettings
    from utils.distributed import SINGLE

    torch.manual_seed(0)
    data = datasets.build("digits")
    poisoned = PoisonedData(data.train_x, data.train_y, build_attack(args.attack_name), device=device)
    model = models.build(args.model_name, num_classes=10, width=args.width).to(device)
    config = TrainSettings(mlmmdr_lamb=0.1, batch_size=args.batch_size, progress=False, **settings)
    return Trainer(model, poisoned, config, device, context or SINGLE), poisoned


def time_fast_paths(args) -> dict:
    device = torch.device(args.device)
    rates = {}
    for name in args.paths:
        trainer, poisoned = _trainer(args, device, **PATHS[name])
        warmup = args.warmup + (2 if PATHS[name].get("compile") else 0)  # compile happens in the first steps
        rates[name] = round(_step_rate(trainer, poisoned, args.batch_size, args.steps, warmup, device), 1)
        trainer.close()
    return rates


def ddp_world_size(device: torch.device, requested: int, gpus: int) -> tuple:
    """(ranks, None) for the DDP timing on ``device``, or (0, why not): on the CPU the requested gloo
    ranks; on CUDA one NCCL rank per GPU, so no more ranks than visible GPUs, and none with fewer
    than 2 (one GPU shared by two ranks would time contention, not DDP)."""
    if device.type != "cuda":
        return requested, None
    ranks = min(requested, gpus)
    if ranks < 2:
        return 0, f"DDP over NCCL needs at least 2 GPUs (one per rank); {gpus} visible"
    return ranks, None


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ddp_rank(rank: int, ranks: int, port: int, args, queue) -> None:
    """One rank, joined as torchrun joins a run (utils.distributed.from_env: NCCL and GPU ``rank`` on
    CUDA, gloo on the CPU), so the timed step is the one main.py runs under torchrun."""
    import os

    from utils import distributed

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(ranks),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(max(1, args.threads // ranks))
    device_type = torch.device(args.device).type
    try:
        context = distributed.from_env(device_type)
        device = torch.device("cuda", context.local_rank) if device_type == "cuda" else torch.device("cpu")
        trainer, poisoned = _trainer(args, device, context, sync_bn=True)
        rate = _step_rate(trainer, poisoned, args.batch_size, args.steps, args.warmup, device)
        trainer.close()
        if rank == 0:
            queue.put(rate)
    finally:
        distributed.shutdown()


def mmd_gather_traffic(args, ranks: int) -> dict:
    """The mmd_gather field (see the module's docstring): float32 features of the timed model at
    the timed step's levels, on the batches _step_rate draws."""
    import datasets
    import models
    from attacks import build as build_attack
    from attacks.poisoning import PoisonedData
    from regularizers import MultiLevelMMD
    from regularizers.multilevel import gather_traffic
    from training import TrainSettings

    settings = TrainSettings()
    data = datasets.build("digits")
    poisoned = PoisonedData(data.train_x, data.train_y, build_attack(args.attack_name))
    generator = torch.Generator().manual_seed(0)  # _step_rate's batches
    batches = [poisoned.make_batch(torch.randint(0, len(poisoned), (args.batch_size,), generator=generator))
               for _ in range(args.warmup + args.steps)]
    model = models.build(args.model_name, num_classes=10, width=args.width)
    regularizer = MultiLevelMMD(model, settings.levels)
    with torch.no_grad():
        model.eval()(batches[0].x[:1])
    features = regularizer.features.values()
    row_bytes = sum(feats[0].numel() * feats.element_size() for feats in features)
    collectives = {"all_rows": len(features), "used_rows": len({feats.dtype for feats in features})}
    regularizer.remove()
    steps = [gather_traffic(row_bytes, batch.benign_target_mask(settings.target), batch.poisoned, ranks)
             for batch in batches]
    mean = {scheme: round(sum(step[scheme] for step in steps) / len(steps)) for scheme in ("all_rows", "used_rows")}
    return {"ranks": ranks, "batches": len(steps), "all_rows_bytes": mean["all_rows"],
            "used_rows_bytes": mean["used_rows"], "collectives": collectives,
            "ratio_all_vs_used": round(mean["all_rows"] / max(mean["used_rows"], 1), 2)}


def time_ddp(args, ranks: int) -> float:
    """Global images per second of the DDP step with ``ranks`` processes on ``args.device``'s kind."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_ddp_rank, args=(ranks, _free_port(), args, queue), nprocs=ranks, start_method="spawn")
    return round(queue.get(), 1)


@dataclass
class StepOptions(common.BenchmarkOptions):
    """The benchmark's flags, one field each; the JSON repeats those that say what was timed."""

    model_name: str = common.model_name()
    width: float = common.width(1.0)
    batch_size: int = param(256, "images of a training step (the paper's batch, §3.4)", low=1)
    attack_name: str = param("patched", "the attack whose poisoned set the steps train on")
    device: str = common.device("cpu")
    steps: int = param(3, "timed rounds", low=1)
    warmup: int = param(1, "untimed rounds first", low=0)
    adv_embed_d_epochs: int = param(100, "adversarial embedding's discriminator epochs per classifier epoch, timed "
                                    "once (the reference's 100)", low=1)
    mmd_n: int = param(256, "pooled samples for the MMD² comparison", low=2)
    mmd_d: int = param(16384, "feature dimension for the MMD² comparison", low=1)
    skip_broadcast: bool = param(False, "skip the n×n×d MMD² (it needs ~2·n²·d·4 bytes)")
    paths: list = param(list(PATHS), "fast paths to time (images/s of the ML-MMDR step); none: skip",
                        choices=tuple(PATHS), nargs="*")
    ddp_ranks: int = param(2, "DDP ranks: gloo processes on the CPU; on CUDA one NCCL process per GPU, at most the "
                              "visible GPUs (fewer than 2: skipped); 0 or 1: skip", low=0)
    threads: Optional[int] = common.threads(note="; in all, the DDP ranks share them")


def main(argv=None) -> int:
    from utils.device import resolve_device

    args = common.parse(StepOptions, argv, __doc__)
    device = resolve_device(args.device)
    args.device = str(device)  # auto resolved: the JSON names the device every rate was timed on
    args.threads = common.thread_count(args.threads)  # the DDP ranks share them
    step = time_steps(args)
    result = {"model_name": args.model_name, "width": args.width, "batch_size": args.batch_size,
              "device": args.device, "threads": torch.get_num_threads(), "timed_rounds": args.steps,
              "bare_step_s": round(step["bare"], 4), "rbt_step_s": round(step["rbt"], 4),
              "mlmmdr_step_s": round(step["mlmmdr"], 4),
              "ratio_rbt_vs_bare": round(step["rbt"] / step["bare"], 4),
              "ratio_mlmmdr_vs_rbt": round(step["mlmmdr"] / step["rbt"], 4),
              "regularizer_step_s": {regularizer: round(step[kind], 4) for kind, _, regularizer, _ in REGULARIZED[1:]},
              "ratio_vs_rbt": {regularizer: round(step[kind] / step["rbt"], 4)
                               for kind, _, regularizer, _ in REGULARIZED[1:]},
              "adv_embed_discriminator_s": round(step["adv_embed_discriminator"], 3),
              "adv_embed_epoch_ratio_vs_rbt": round((step["epoch_steps"] * step["adv_embed"] + step["adv_embed_discriminator"])
                                                    / (step["epoch_steps"] * step["rbt"]), 4),
              "mmd_n": args.mmd_n, "mmd_d": args.mmd_d}
    ours = run_mmd("ours", args.mmd_n, args.mmd_d, args.device)
    result.update({"mmd_ours_s": round(ours["seconds"], 4), "mmd_ours_peak_mb": round(ours["peak_mb"], 1)})
    if not args.skip_broadcast:
        broadcast = run_mmd("broadcast", args.mmd_n, args.mmd_d, args.device)
        result.update({"mmd_broadcast_s": round(broadcast["seconds"], 4),
                       "mmd_broadcast_peak_mb": round(broadcast["peak_mb"], 1),
                       "mmd_values_agree": abs(ours["value"] - broadcast["value"]) <= 1e-3 * max(1.0, abs(ours["value"]))})
    rates = {}
    if args.paths:
        rates = time_fast_paths(args)
        result["images_per_s"] = rates
    if args.ddp_ranks > 1:
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        ranks, skipped = ddp_world_size(device, args.ddp_ranks, gpus)
        result["ddp_device"] = device.type
        if skipped:
            result["ddp_skipped"] = skipped
        else:
            result.update({"ddp_backend": "nccl" if device.type == "cuda" else "gloo", "ddp_ranks": ranks,
                           "ddp_images_per_s": time_ddp(args, ranks)})
            if "plain" in rates:  # one process's rate on the same kind of device: like with like
                result["ddp_speedup_vs_one_process"] = round(result["ddp_images_per_s"] / rates["plain"], 3)
    result["mmd_gather"] = mmd_gather_traffic(args, result.get("ddp_ranks", max(args.ddp_ranks, 2)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    from pipeline.cli import run_cli

    sys.exit(run_cli(main))
