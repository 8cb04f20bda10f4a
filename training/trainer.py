"""The training loop of Algorithm 1: one forward pass per batch, Lt = L1 + L2 + λ·L3.

One loop for one process and for DistributedDataParallel (utils/distributed.py): under DDP each
rank's loss is scaled so that DDP's gradient average is the gradient of the single-process loss
on the global batch (see :meth:`Trainer.step`).
"""
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm import tqdm

from attacks.poisoning import PoisonedData
import regularizers
from inference import autocast, ba_asr, clean_and_triggered_predictions, source_classes
from training.loss import backdoor_cross_entropy
from training.sync_bn import convert_sync_batchnorm
from utils.distributed import SINGLE, Context
from utils.errors import UserError
from utils.progress import bar_disabled

MMD_SYNCS = ("global", "local")


@dataclass
class TrainSettings:
    """What the training loop needs; the run layer fills it from the run's configuration.
    Defaults are the paper's (§3.4, Algorithm 1)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.01
    milestones: tuple = (50, 70)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    target: int = 0
    mlmmdr_lamb: float = 0.0
    regularizer: str = "mmd"  # regularizers.REGULARIZERS; λ = mlmmdr_lamb weighs it
    regularizer_params: dict = None  # its own options (None: its defaults)
    seed: int = 0  # a regulariser that draws (SWD's directions, a discriminator's init) derives from it
    levels: tuple = ("s1", "s2", "s3")
    kernel: str = "gmk2"
    mlmmdr_reduce: str = "mean"
    mmd_estimator: str = "biased"
    ce_reduction: str = "split"
    amp: bool = False
    amp_dtype: str = "bf16"
    sync_bn: bool = False
    mmd_sync: str = "global"
    channels_last: bool = False
    compile: bool = False
    eval_batch_size: int = 512
    eval_every: int = 1
    progress: bool = True


# --amp_dtype: bf16 keeps float32's exponent range; fp16 needs its loss scaled (Trainer.scaler)
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingDiverged(UserError):
    """The loss became NaN or ±inf: the run stops at once and is never reported as a result."""


class Trainer:
    """Owns the model, optimiser, schedule and (when λ > 0) the regulariser's hooks.

    ``model`` stays the plain module (its state dict is the checkpoint's); ``network`` is what
    the steps call: the model wrapped in DDP under torchrun, compiled with ``compile``."""

    def __init__(self, model: nn.Module, data: PoisonedData, config: TrainSettings, device: torch.device,
                 context: Context = SINGLE):
        if config.mmd_sync not in MMD_SYNCS:
            raise UserError(f"unknown --mmd_sync '{config.mmd_sync}'; choose one of {', '.join(MMD_SYNCS)}")
        self.model, self.data, self.config, self.device, self.context = model, data, config, device, context
        if config.channels_last:
            model.to(memory_format=torch.channels_last)
        if config.compile and config.sync_bn and context.active:
            # Both forms of --sync_bn hold collectives inside autograd functions, which the compiler
            # would have to break the graph around; that has not been shown to give the same numbers
            raise UserError("--compile with --sync_bn under torchrun is not supported (SyncBatchNorm's collectives "
                            "sit inside the compiled network); drop one of them")
        if context.active and not config.sync_bn and context.is_main:
            warnings.warn(f"without --sync_bn each of the {context.world_size} ranks normalises its own shard of the "
                          f"batch, so this run differs from a one-process run and depends on the number of ranks; "
                          f"pass --sync_bn for the one-process model")
        if config.sync_bn and context.active:
            convert_sync_batchnorm(model, context, device)  # before the hooks: replaced modules lose theirs
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(config.milestones),
                                                              gamma=0.1)
        if config.amp_dtype not in AMP_DTYPES:
            raise UserError(f"unknown --amp_dtype '{config.amp_dtype}'; choose one of {', '.join(AMP_DTYPES)}")
        # autocast's dtype, or False without --amp; bf16 runs on the CPU too
        self.amp = AMP_DTYPES[config.amp_dtype] if config.amp else False
        # fp16's gradients underflow unless the loss is scaled up; disabled, the scaler is a pass-through
        # (scale returns the loss, step is optimizer.step()), so every other run steps as it did without it
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp is torch.float16)
        self.regularizer = None
        self.last_clean_predictions = None
        self._warned_inactive = False
        if config.mlmmdr_lamb > 0:
            self.regularizer = regularizers.create(config.regularizer, model, config, config.regularizer_params)
            if context.active and not self.regularizer.supports_ddp:
                self.regularizer.remove()
                raise UserError(f"--regularizer {config.regularizer} does not run under torchrun; run it in one "
                                f"process")
        self.network = model
        if context.active:
            from torch.nn.parallel import DistributedDataParallel

            self.network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile:
            self.network = torch.compile(self.network)

    def step(self, batch) -> dict:
        """One optimisation step of Algorithm 1 (lines 9–13): Lt = L1 + L2 + λ·L3, with L1 + L2
        replaced by the batch-mean cross-entropy under ``ce_reduction="pooled"`` (the prototype).
        Returns the detached loss terms (tensors on the device): this rank's shares, which sum
        over the ranks to the global batch's values (in one process, the values).

        Under DDP (K ranks), L1 and L2 divide by the *global* counts of benign and poisoned
        samples, and with ``mmd_sync="global"`` every rank computes L3 on the features gathered
        from all ranks. DDP averages the ranks' gradients, i.e. differentiates (1/K)·Σ_r loss_r,
        so rank r backpropagates K·(its CE share) + λ·L3: the average is then the gradient of
        L1 + L2 + λ·L3 on the global batch. With ``mmd_sync="local"`` L3 is each rank's own
        MMD² and the update follows λ·mean_r L3_r, another estimator."""
        world = self.context.world_size
        inputs = batch.x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else batch.x
        with autocast(self.device, self.amp):
            logits = self.network(inputs)
        poisoned_count = int(batch.poisoned.sum())
        ce, benign_ce, poisoned_ce = backdoor_cross_entropy(logits, batch.y, batch.poisoned[batch.rows],
                                                            self.config.ce_reduction,
                                                            counts=(batch.size - poisoned_count, poisoned_count))
        terms = {"ce": ce.detach(), "ce_benign": benign_ce.detach(), "ce_poisoned": poisoned_ce.detach()}
        loss, share = world * ce, ce.detach()
        if self.regularizer is not None:
            benign = self.regularizer.benign_mask(batch, self.config.target)
            if self.config.mmd_sync == "global":
                term, per_level = self.regularizer.loss(benign, batch.poisoned, self.context)
            else:
                term, per_level = self.regularizer.loss(benign[batch.rows], batch.poisoned[batch.rows])
            loss = loss + self.config.mlmmdr_lamb * term
            share = share + self.config.mlmmdr_lamb * term.detach() / world
            terms.update({f"{self.regularizer.term}_{level}": value.detach() / world
                          for level, value in per_level.items()})
        terms["loss"] = share
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)  # under fp16, skipped when a gradient overflowed (the scale then halves)
        self.scaler.update()
        return terms

    def evaluate(self, test_x, test_y) -> dict:
        if self.regularizer is not None:
            with self.regularizer.paused():
                return self._evaluate(test_x, test_y)
        return self._evaluate(test_x, test_y)

    def _evaluate(self, test_x, test_y) -> dict:
        """BA/ASR on the test set; under DDP each rank predicts its shard with rank 0's BatchNorm
        statistics (without --sync_bn the ranks' running statistics drift apart) and the
        predictions are gathered."""
        self.context.broadcast_buffers(self.model)
        rows = self.context.shard(len(test_y))
        clean, triggered = clean_and_triggered_predictions(self.model, test_x[rows], test_y[rows], self.data.attack,
                                                           self.config.target, self.device,
                                                           self.config.eval_batch_size, self.amp)
        clean, triggered = self.context.concat(clean), self.context.concat(triggered)
        self.last_clean_predictions = clean  # kept for the run's collapse check, which needs no second pass
        return ba_asr(clean, test_y, triggered, self.config.target, source_classes(self.data.attack))

    def train_epoch(self, epoch: int) -> dict:
        """Mean loss terms over the epoch. Terms are summed on the device and read only when the
        progress bar refreshes, so the loop does not wait on the GPU every step."""
        if self.regularizer is not None:
            self.regularizer.start_epoch(self, epoch)
        self.network.train()
        sums, steps, active_steps = {}, 0, 0
        unchecked = []  # (step, terms) since the last finiteness check
        total = self.data.num_batches(self.config.batch_size)
        bar = tqdm(self.data.batches(self.config.batch_size, epoch, self.context), total=total, leave=False,
                   desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=bar_disabled(self._progress),
                   dynamic_ncols=True)
        for batch in bar:
            terms = self.step(batch)
            for key, value in terms.items():
                sums[key] = sums[key] + value if key in sums else value
            unchecked.append((steps, terms))
            active_steps += int(self.regularizer is not None and self.regularizer.last_active)
            steps += 1
            if steps % 10 == 0 or steps == total:
                self._stop_if_diverged(unchecked, epoch)  # read here, where the bar reads the device anyway
                unchecked = []
                if self._progress:
                    bar.set_postfix({key: f"{(value / steps).item():.4g}" for key, value in sums.items()})
        self._stop_if_weights_diverged(epoch, steps)
        self.scheduler.step()
        totals = self.context.all_reduce_sum(torch.stack(list(sums.values()))) if sums else torch.zeros(0)
        means = {key: (value / max(steps, 1)).item() for key, value in zip(sums, totals)}
        if self.regularizer is not None:
            means[f"{self.regularizer.term}_active_steps"] = active_steps
            if active_steps == 0 and not self._warned_inactive and getattr(self.regularizer, "active", True):
                self._warned_inactive = True
                warnings.warn(f"the {self.regularizer.display} term was active in none of epoch {epoch + 1}'s {steps} "
                              f"steps: a batch needs at least 2 clean target-class and 2 poisoned samples; raise "
                              f"batch_size ({self.config.batch_size}) or the regulariser has no effect")
        return means

    @property
    def _progress(self) -> bool:
        return self.config.progress and self.context.is_main

    def _causes(self) -> str:
        causes = [f"lr={self.config.lr:g}"] + ([f"mlmmdr_lamb={self.config.mlmmdr_lamb:g}"]
                                                 if self.config.mlmmdr_lamb > 0 else [])
        return f"{' or '.join(causes)} is likely too large for this model and data"

    def _stop_if_weights_diverged(self, epoch: int, steps: int) -> None:
        """The last step's update can make the weights non-finite while every loss was finite; such
        a model predicts one class for everything, which would read as a perfect attack."""
        finite = torch.stack([parameter.detach().isfinite().all() for parameter in self.model.parameters()]).all()
        if not bool(finite):
            raise TrainingDiverged(f"training diverged at epoch {epoch + 1}: after its {steps} steps the weights are "
                                   f"not finite; {self._causes()}")

    def _stop_if_diverged(self, unchecked: list, epoch: int) -> None:
        """Raise naming the first of the ``unchecked`` (step, terms) whose loss is not finite; one
        device read for all of them."""
        if not unchecked:
            return
        finite = torch.stack([terms["loss"] for _, terms in unchecked]).isfinite().tolist()
        if self.context.all_true(all(finite)):  # every rank stops together, none waits in a collective
            return
        if all(finite):
            raise TrainingDiverged(f"training diverged at epoch {epoch + 1}: another rank's loss is not finite; "
                                   f"{self._causes()}")
        step, terms = unchecked[finite.index(False)]
        shown = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
        raise TrainingDiverged(f"training diverged at epoch {epoch + 1}, step {step + 1}: {shown}; {self._causes()}")

    def state_dict(self, history: list) -> dict:
        """Everything the next epoch needs: model, optimiser, schedule, every random
        generator's state and the history so far. Loading it and calling :meth:`fit` continues the
        run exactly where it stopped: bit for bit on the CPU with the same thread count, and on a GPU
        with ``--deterministic``."""
        import random

        import numpy as np

        state = {"model": {key: value.detach().cpu() for key, value in self.model.state_dict().items()},
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "data_rng": self.data.rng_state(),
                 "torch_rng": torch.get_rng_state(), "history": list(history),
                 "python_rng": random.getstate()}
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        # as a tensor, so the checkpoint loads with torch.load(weights_only=True)
        state["numpy_rng"] = (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)
        # No state of the CUDA default generators: training draws its random numbers from the data's
        # own generators (data_rng, on the device for augmentation) and the CPU's, and a GPU count
        # recorded here would stop a resume on fewer GPUs. The world size is kept: a resume on another number of ranks is another run
        # unless the run is rank-invariant (see pipeline/stages/train.py).
        state["world_size"] = self.context.world_size
        if self.scaler.is_enabled():  # fp16's loss scale and its growth counter: a resume goes on with them
            state["grad_scaler"] = self.scaler.state_dict()
        if self.regularizer is not None and self.regularizer.state_dict():  # a discriminator, a direction stream
            state["regularizer"] = self.regularizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> list:
        """Restore :meth:`state_dict`; returns the history so far."""
        import random

        import numpy as np

        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.data.set_rng_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        kind, keys, position, has_gauss, gauss = state["numpy_rng"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(state["python_rng"])  # a "cuda_rng" entry of an older checkpoint is not needed
        if self.scaler.is_enabled():
            if "grad_scaler" not in state:
                raise KeyError("grad_scaler (the checkpoint was not written by an --amp_dtype fp16 run)")
            self.scaler.load_state_dict(state["grad_scaler"])
        if self.regularizer is not None and "regularizer" in state:
            self.regularizer.load_state_dict(state["regularizer"])
        return list(state["history"])

    def fit(self, test_x, test_y, on_epoch=None, history=None) -> list:
        """Train the remaining epochs (all of them, or those after ``history``, a resumed run's);
        ``on_epoch(history)`` runs after each epoch."""
        history = list(history or [])
        overall = tqdm(range(len(history), self.config.epochs), desc="training", disable=bar_disabled(self._progress),
                       dynamic_ncols=True, initial=len(history), total=self.config.epochs)
        for epoch in overall:
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch + 1, "lr": lr, **self.train_epoch(epoch)}
            due = (epoch + 1) % self.config.eval_every == 0 or epoch + 1 == self.config.epochs
            row.update(self.evaluate(test_x, test_y) if due else {"ba": None, "asr": None})
            row["seconds"] = round(time.perf_counter() - started, 3)
            history.append(row)
            overall.set_postfix({key: f"{value:.4g}" for key, value in row.items()
                                 if value is not None and key not in ("epoch", "seconds")})
            if on_epoch is not None:
                on_epoch(history)
        return history

    def close(self) -> None:
        if self.regularizer is not None:
            self.regularizer.remove()
