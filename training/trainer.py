"""The training loop of Algorithm 1: one forward pass per batch, Lt = L1 + L2 + λ·L3."""
import time
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm import tqdm

from attacks.poisoning import PoisonedData
from regularizers import MultiLevelMMD
from inference import autocast, ba_asr, clean_and_triggered_predictions
from training.loss import backdoor_cross_entropy
from utils.errors import UserError


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
    levels: tuple = ("s1", "s2", "s3")
    kernel: str = "gmk2"
    mlmmdr_reduce: str = "mean"
    mmd_estimator: str = "biased"
    ce_reduction: str = "split"
    amp: bool = False
    eval_batch_size: int = 512
    eval_every: int = 1
    progress: bool = True


class TrainingDiverged(UserError):
    """The loss became NaN or ±inf: the run stops at once and is never reported as a result."""


class Trainer:
    """Owns the model, optimiser, schedule and (when λ > 0) the regulariser's hooks."""

    def __init__(self, model: nn.Module, data: PoisonedData, config: TrainSettings, device: torch.device):
        self.model, self.data, self.config, self.device = model, data, config, device
        self.optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(config.milestones),
                                                              gamma=0.1)
        self.amp = config.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.regularizer = None
        self.last_clean_predictions = None
        self._warned_inactive = False
        if config.mlmmdr_lamb > 0:
            self.regularizer = MultiLevelMMD(model, config.levels, config.kernel, config.mlmmdr_reduce,
                                             config.mmd_estimator)

    def step(self, batch) -> dict:
        """One optimisation step of Algorithm 1 (lines 9–13): Lt = L1 + L2 + λ·L3, with L1 + L2
        replaced by the batch-mean cross-entropy under ``ce_reduction="pooled"`` (the prototype).
        Returns the detached loss terms (tensors on the device)."""
        with autocast(self.device, self.amp):
            logits = self.model(batch.x)
        ce, benign_ce, poisoned_ce = backdoor_cross_entropy(logits, batch.y, batch.poisoned,
                                                            self.config.ce_reduction)
        terms = {"ce": ce.detach(), "ce_benign": benign_ce.detach(), "ce_poisoned": poisoned_ce.detach()}
        loss = ce
        if self.regularizer is not None:
            mmd, per_level = self.regularizer.loss(batch.benign_target_mask(self.config.target),
                                                   batch.poisoned)
            loss = ce + self.config.mlmmdr_lamb * mmd
            terms.update({f"mmd_{level}": value.detach() for level, value in per_level.items()})
        terms["loss"] = loss.detach()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return terms

    def evaluate(self, test_x, test_y) -> dict:
        if self.regularizer is not None:
            with self.regularizer.paused():
                return self._evaluate(test_x, test_y)
        return self._evaluate(test_x, test_y)

    def _evaluate(self, test_x, test_y) -> dict:
        clean, triggered = clean_and_triggered_predictions(self.model, test_x, test_y, self.data.attack,
                                                           self.config.target, self.device,
                                                           self.config.eval_batch_size, self.amp)
        self.last_clean_predictions = clean  # kept for the run's collapse check, which needs no second pass
        return ba_asr(clean, test_y, triggered, self.config.target)

    def train_epoch(self, epoch: int) -> dict:
        """Mean loss terms over the epoch. Terms are summed on the device and read only when the
        progress bar refreshes, so the loop does not wait on the GPU every step."""
        self.model.train()
        sums, steps, mmd_active_steps = {}, 0, 0
        unchecked = []  # (step, terms) since the last finiteness check
        total = self.data.num_batches(self.config.batch_size)
        bar = tqdm(self.data.batches(self.config.batch_size, epoch), total=total, leave=False,
                   desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not self.config.progress,
                   dynamic_ncols=True)
        for batch in bar:
            terms = self.step(batch)
            for key, value in terms.items():
                sums[key] = sums[key] + value if key in sums else value
            unchecked.append((steps, terms))
            mmd_active_steps += int(self.regularizer is not None and self.regularizer.last_active)
            steps += 1
            if steps % 10 == 0 or steps == total:
                self._stop_if_diverged(unchecked, epoch)  # read here, where the bar reads the device anyway
                unchecked = []
                bar.set_postfix({key: f"{(value / steps).item():.4g}" for key, value in sums.items()})
        self._stop_if_weights_diverged(epoch, steps)
        self.scheduler.step()
        means = {key: (value / max(steps, 1)).item() for key, value in sums.items()}
        if self.regularizer is not None:
            means["mmd_active_steps"] = mmd_active_steps
            if mmd_active_steps == 0 and not self._warned_inactive:
                self._warned_inactive = True
                warnings.warn(f"the MMD term was active in none of epoch {epoch + 1}'s {steps} steps: a batch needs "
                              f"at least 2 clean target-class and 2 poisoned samples; raise batch_size "
                              f"({self.config.batch_size}) or the regulariser has no effect")
        return means

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
        if all(finite):
            return
        step, terms = unchecked[finite.index(False)]
        shown = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
        raise TrainingDiverged(f"training diverged at epoch {epoch + 1}, step {step + 1}: {shown}; {self._causes()}")

    def state_dict(self, history: list) -> dict:
        """Everything the next epoch needs: model, optimiser, schedule, grad scaler, every random
        generator's state and the history so far. Loading it and calling :meth:`fit` continues the
        run exactly where it stopped (on the same device and thread count, bit for bit)."""
        import random

        import numpy as np

        state = {"model": {key: value.detach().cpu() for key, value in self.model.state_dict().items()},
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "data_rng": self.data.rng_state(),
                 "torch_rng": torch.get_rng_state(), "history": list(history),
                 "python_rng": random.getstate()}
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        # as a tensor, so the checkpoint loads with torch.load(weights_only=True)
        state["numpy_rng"] = (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> list:
        """Restore :meth:`state_dict`; returns the history so far."""
        import random

        import numpy as np

        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.data.set_rng_state(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        kind, keys, position, has_gauss, gauss = state["numpy_rng"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(state["python_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return list(state["history"])

    def fit(self, test_x, test_y, on_epoch=None, history=None) -> list:
        """Train the remaining epochs (all of them, or those after ``history``, a resumed run's);
        ``on_epoch(history)`` runs after each epoch."""
        history = list(history or [])
        overall = tqdm(range(len(history), self.config.epochs), desc="training", disable=not self.config.progress,
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
