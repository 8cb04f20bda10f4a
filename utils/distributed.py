"""The process group of a DistributedDataParallel run, and the few collectives the code needs.

``torchrun --nproc_per_node K main.py …`` starts K processes with RANK, LOCAL_RANK and WORLD_SIZE
in their environment; :func:`from_env` joins them into one process group (NCCL on CUDA, gloo on
the CPU) and returns the :class:`Context` every layer consults. A plain ``python main.py`` gets the
single-process context, for which every collective is the identity, so the code has one path.

How work is split: every rank holds the whole uint8 training set and assembles the *global* batch
(a gather, crop and flip of uint8 images and the triggers: cheap beside a forward pass), then
keeps its contiguous shard of rows (:meth:`Context.shard`). Every random stream is therefore the
single-process one on every rank, so a DDP run sees the same global batches as one process and
resumes from rank 0's checkpoint alone.
"""
import datetime
import gc
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.errors import ParameterError, UserError


class PeerFailure(UserError):
    """Rank 0's failure, raised on the other ranks by :meth:`Context.agree`. Rank 0 reports it
    itself; ``echo`` marks one that rank 0 prints as the run's one line, which the other ranks
    therefore do not repeat."""

    def __init__(self, message: str, echo: bool = False):
        super().__init__(message)
        self.echo = echo


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0   # on CUDA, the index of this rank's GPU among those the process sees

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files and prints."""
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This rank's contiguous rows of ``count`` (sizes differ by at most one, in rank order)."""
        base, extra = divmod(count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))

    def shard_sizes(self, count: int) -> list:
        base, extra = divmod(count, self.world_size)
        return [base + (1 if rank < extra else 0) for rank in range(self.world_size)]

    def gather_rows(self, local: torch.Tensor, counts) -> torch.Tensor:
        """Every rank's ``local`` rows (``counts[r]`` of them on rank r), concatenated in rank order,
        with the autograd-aware all-gather: the backward sums each rank's gradient of the gathered
        rows into the rows' owner, so a loss of the gathered rows has the gradient of the
        single-process loss on them."""
        if not self.active:
            return local
        padded = local
        if len(local) < max(counts):  # all-gather needs equal shapes: pad, then drop the padding
            padded = torch.cat([local, local.new_zeros((max(counts) - len(local), *local.shape[1:]))])
        import torch.distributed.nn.functional as autograd_collectives

        with warnings.catch_warnings():  # deprecated in favour of a private API; the public one is kept
            warnings.simplefilter("ignore", FutureWarning)
            parts = autograd_collectives.all_gather(padded)
        return torch.cat([part[:count] for part, count in zip(parts, counts)])

    def all_reduce_sum(self, tensor: torch.Tensor, autograd: bool = False) -> torch.Tensor:
        """Σ over ranks; with ``autograd`` the backward sums the gradients back (a synchronised
        statistic used by every rank's loss)."""
        if not self.active:
            return tensor
        if autograd:
            import torch.distributed.nn.functional as autograd_collectives

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return autograd_collectives.all_reduce(tensor)
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank (so every rank takes the same branch)."""
        if not self.active:
            return flag
        value = torch.tensor([0 if flag else 1], device=self.collective_device)
        dist.all_reduce(value)
        return int(value.item()) == 0

    def concat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's (CPU) tensor, concatenated in rank order: a sharded pass's whole result."""
        if not self.active:
            return tensor
        parts = [None] * self.world_size
        dist.all_gather_object(parts, tensor.cpu())
        return torch.cat(parts)

    def broadcast(self, value):
        """Rank 0's picklable ``value`` on every rank."""
        if not self.active:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank."""
        if self.active:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def agree(self, compute):
        """Run ``compute()`` on rank 0 and return its result on every rank. Whatever it raises is
        raised on every rank: a UserError as the same one line, any other error (a full disk, a
        quota, a stale NFS handle on the rank that writes) as :class:`PeerFailure` on the other
        ranks, while rank 0 raises the original. So a failure of rank 0's alone stops every rank at
        once instead of leaving the others waiting in a collective until its timeout."""
        if not self.active:
            return compute()
        outcome = None
        if self.is_main:
            try:
                outcome = ("ok", compute())
            except ParameterError as error:
                outcome = ("parameter", (error.parameter, error.problem))
            except UserError as error:
                outcome = ("error", str(error))
            except BaseException as error:  # KeyboardInterrupt too: the others must not wait for rank 0
                self.broadcast(("failed", f"{type(error).__name__}: {error}"))
                raise
        kind, value = self.broadcast(outcome)
        if kind == "parameter":
            error = ParameterError(*value)
            error.echo = True  # rank 0 prints it
            raise error
        if kind == "error":
            raise PeerFailure(value, echo=True)
        if kind == "failed":
            raise PeerFailure(f"rank 0 failed ({value}); its own output says more")
        return value

    @property
    def collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


SINGLE = Context()
_current = SINGLE


def from_env(device_name: str = "auto") -> Context:
    """The context of this process: under torchrun (WORLD_SIZE > 1 in the environment) the process
    group is joined once, with NCCL when the run uses CUDA and gloo otherwise; else SINGLE."""
    global _current
    world_size = launched_world_size()
    if world_size <= 1:
        return SINGLE
    if _current.active:
        return _current
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    from utils.device import resolve_device

    cuda = resolve_device(device_name).type == "cuda"
    if cuda:
        # local rank r uses GPU r of those it sees; a cluster that binds one GPU to each task (Slurm's
        # --gpus-per-task, --gpu-bind) shows each rank only its own, GPU 0
        local_rank %= max(1, torch.cuda.device_count())
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    _current = Context(rank, world_size, local_rank)
    return _current


def launched_world_size() -> int:
    """The number of ranks torchrun (or a Slurm task's environment) launched this process among (1 outside)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun), before any process group exists."""
    return int(os.environ.get("RANK", "0")) if launched_world_size() > 1 else 0


def current() -> Context:
    """The context :func:`from_env` created (SINGLE outside torchrun)."""
    return _current


def shutdown() -> None:
    """Leave the process group and free it now, while the interpreter is whole.

    ``destroy_process_group`` drops only c10d's own reference to the group. DDP's reducer and the
    trainer's hooks, often in reference cycles, can keep a gloo group alive until the interpreter
    finalizes; freeing it then (its workers' finished work still holds tensors) takes the GIL from
    a dying interpreter, and a rank whose run succeeded aborts ("terminate called without an
    active exception", SIGABRT), which torchrun reports as a failed run. Collecting the cycles
    around the destroy frees the group here instead."""
    global _current
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
    _current = SINGLE
