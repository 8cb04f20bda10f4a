#!/usr/bin/env python
"""Time one training step three ways, and MMD² ours vs the n×n×d broadcast; prints one JSON object.

    python benchmarks/train_step.py [--model_name vgg11] [--batch_size 256] [--device cpu]

bare_step_s:   forward + backward + SGD step on a batch assembled beforehand, already on the device
rbt_step_s:    our full RBT step: batch assembly from the in-memory uint8 set, batched crop/flip,
               triggers on the poisoned rows, then the same step (λ = 0)
mlmmdr_step_s: the same with λ = 0.1 at all levels (s1, s2, s3)
The three are timed in interleaved rounds (median over rounds) so drift hits them alike.

images_per_s:  the ML-MMDR step (λ = 0.1, all levels) through each fast path of --paths: plain,
               amp (bf16 autocast), channels_last, compile (torch.compile, compiled before timing),
               all (the three together); uint8 data on the device in every case
ddp_images_per_s: the same step under DDP with --ddp_ranks gloo processes on the CPU (global batch
               --batch_size, --sync_bn, the all-gathered MMD), against one process's plain rate
cifar10_grid_hours: what the paper's CIFAR-10 grid costs for this architecture at the fastest path's
               rate: 4 attacks × 7 trainings × 100 epochs × 55,000 images (50,000 + 10% poisoned
               copies), ML-MMDR's rate for every run (RBT is a little faster): GPU-hours on a GPU,
               core-hours on --device cpu

mmd_*: MMD² (GMK2) of n = 256 pooled samples (128 + 128) of d = 16384 features (VGG-11's s1
size), forward only: ours builds the n×n Gram matrix, the broadcast formulation (the authors'
prototype) builds the n×n×d difference tensor. Peak memory is measured in a fresh process
(CPU: peak RSS increase; CUDA: torch.cuda.max_memory_allocated).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


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
    for kind, lamb in (("rbt", 0.0), ("mlmmdr", 0.1)):
        config = TrainSettings(mlmmdr_lamb=lamb, batch_size=args.batch_size, progress=False)
        model = models.build(args.model_name, num_classes=10, width=args.width).to(device)
        trainers[kind] = Trainer(model, poisoned, config, device)
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

    steps = {"bare": bare, "rbt": lambda: full("rbt"), "mlmmdr": lambda: full("mlmmdr")}
    times = {name: [] for name in steps}
    for round_index in range(args.warmup + args.steps):
        for name, step in steps.items():
            _sync(device)
            started = time.perf_counter()
            step()
            _sync(device)
            if round_index >= args.warmup:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


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


def _ddp_rank(rank: int, ranks: int, store: str, args, queue) -> None:
    import torch.distributed as dist

    from utils.distributed import Context

    torch.set_num_threads(max(1, args.threads // ranks))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=ranks)
    try:
        trainer, poisoned = _trainer(args, torch.device("cpu"), Context(rank, ranks), sync_bn=True)
        rate = _step_rate(trainer, poisoned, args.batch_size, args.steps, args.warmup, torch.device("cpu"))
        if rank == 0:
            queue.put(rate)
    finally:
        dist.destroy_process_group()


def time_ddp(args) -> float:
    """Global images per second of the DDP step with ``args.ddp_ranks`` gloo ranks on the CPU."""
    import tempfile

    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_ddp_rank, args=(args.ddp_ranks, f"{folder}/store", args, queue), nprocs=args.ddp_ranks,
                           start_method="spawn")
    return round(queue.get(), 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", default="vgg11")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--attack_name", default="patched")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--mmd_n", type=int, default=256, help="pooled samples for the MMD² comparison")
    parser.add_argument("--mmd_d", type=int, default=16384, help="feature dimension for the MMD² comparison")
    parser.add_argument("--skip_broadcast", action="store_true",
                        help="skip the n×n×d MMD² (it needs ~2·n²·d·4 bytes)")
    parser.add_argument("--paths", nargs="*", choices=list(PATHS), default=list(PATHS),
                        help="fast paths to time (images/s of the ML-MMDR step); none: skip")
    parser.add_argument("--ddp_ranks", type=int, default=2, help="gloo ranks for the CPU DDP step (0: skip)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads in all (the DDP ranks share them)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    step = time_steps(args)
    result = {"model_name": args.model_name, "width": args.width, "batch_size": args.batch_size,
              "device": args.device, "threads": torch.get_num_threads(), "timed_rounds": args.steps,
              "bare_step_s": round(step["bare"], 4), "rbt_step_s": round(step["rbt"], 4),
              "mlmmdr_step_s": round(step["mlmmdr"], 4),
              "ratio_rbt_vs_bare": round(step["rbt"] / step["bare"], 4),
              "ratio_mlmmdr_vs_rbt": round(step["mlmmdr"] / step["rbt"], 4),
              "mmd_n": args.mmd_n, "mmd_d": args.mmd_d}
    ours = run_mmd("ours", args.mmd_n, args.mmd_d, args.device)
    result.update({"mmd_ours_s": round(ours["seconds"], 4), "mmd_ours_peak_mb": round(ours["peak_mb"], 1)})
    if not args.skip_broadcast:
        broadcast = run_mmd("broadcast", args.mmd_n, args.mmd_d, args.device)
        result.update({"mmd_broadcast_s": round(broadcast["seconds"], 4),
                       "mmd_broadcast_peak_mb": round(broadcast["peak_mb"], 1),
                       "mmd_values_agree": abs(ours["value"] - broadcast["value"]) <= 1e-3 * max(1.0, abs(ours["value"]))})
    if args.paths:
        rates = time_fast_paths(args)
        fastest = max(rates.values())
        result.update({"images_per_s": rates,
                       "cifar10_grid_hours": round(4 * 7 * 100 * 55_000 / fastest / 3600, 1)})
    if args.ddp_ranks > 1:
        result["ddp_ranks"] = args.ddp_ranks
        result["ddp_images_per_s"] = time_ddp(args)
        if "plain" in result.get("images_per_s", {}):
            result["ddp_speedup_vs_one_process"] = round(result["ddp_images_per_s"] / result["images_per_s"]["plain"], 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
