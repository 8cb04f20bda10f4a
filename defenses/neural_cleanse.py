"""Neural Cleanse trigger synthesis (Wang et al., S&P 2019; paper §6.2), all classes at once.

For every class c a mask m_c (H×W) and a pattern p_c (C×H×W), both in [0,1] through
m = tanh(θ)/2 + ½, are optimised so that (1 − m)⊙x + m⊙p is classified as c, minimising
CE + cost_c·‖m_c‖₁ on clean data. The K classes' masks and patterns are stacked and run through
the model in one batched forward pass per step; each class keeps its own cost schedule and early
stop (the reference implementation's rules), and a finished class leaves the batch. Adam is
element-wise, so stacking changes nothing about each class's optimisation: ``sequential=True``
runs the same procedure one class after another, for comparison.
"""
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from utils.seed import generator


@dataclass
class NCOptions:
    """Defaults of the reference implementation; each is a defend.py flag ``--nc_<name>``."""

    lr: float = 0.1
    betas: tuple = (0.5, 0.9)
    init_cost: float = 1e-3
    attack_threshold: float = 0.99   # attack success a mask must reach to count
    patience: int = 5                # epochs before the cost is raised/lowered
    cost_up: float = 2.0
    cost_down: float = 2.0 ** 1.5
    early_stop_patience: int = 25    # epochs without a 1% better mask, once the cost moved both ways
    early_stop_threshold: float = 0.99
    batch_size: int = 32
    epochs: int = 80                 # the step budget, in epochs of steps_per_epoch mini-batches
    steps_per_epoch: int = 0         # 0: ceil(clean samples / batch size), as the reference

    def to_dict(self) -> dict:
        values = asdict(self)
        values["betas"] = list(self.betas)
        return values


class CostSchedule:
    """The reference's per-epoch bookkeeping, vectorised over classes (numpy arrays of length K)."""

    def __init__(self, count: int, options: NCOptions):
        self.o = options
        self.cost = np.full(count, options.init_cost)
        self.best_norm = np.full(count, np.inf)
        self.early_best = np.full(count, np.inf)
        self.up_counter = np.zeros(count, int)
        self.down_counter = np.zeros(count, int)
        self.set_counter = np.zeros(count, int)
        self.early_counter = np.zeros(count, int)
        self.raised = np.zeros(count, bool)
        self.lowered = np.zeros(count, bool)
        self.done = np.zeros(count, bool)

    def update(self, rows: np.ndarray, success: np.ndarray, norm: np.ndarray) -> np.ndarray:
        """End-of-epoch update for the classes ``rows``; returns which of them improved their best mask."""
        o = self.o
        succeeded = success >= o.attack_threshold
        improved = succeeded & (norm < self.best_norm[rows])
        self.best_norm[rows] = np.where(improved, norm, self.best_norm[rows])
        found = np.isfinite(self.best_norm[rows])
        stalled = found & (self.best_norm[rows] >= o.early_stop_threshold * self.early_best[rows])
        self.early_counter[rows] = np.where(stalled, self.early_counter[rows] + 1, 0)
        self.early_best[rows] = np.minimum(self.early_best[rows], self.best_norm[rows])
        self.done[rows] = self.raised[rows] & self.lowered[rows] & (self.early_counter[rows] >= o.early_stop_patience)
        # a zero cost is reset to the initial one after `patience` successful epochs
        zero = (self.cost[rows] == 0) & succeeded
        self.set_counter[rows] = np.where(zero, self.set_counter[rows] + 1, 0)
        reset = self.set_counter[rows] >= o.patience
        self.cost[rows] = np.where(reset, o.init_cost, self.cost[rows])
        self.up_counter[rows] = np.where(succeeded, self.up_counter[rows] + 1, 0)
        self.down_counter[rows] = np.where(succeeded, 0, self.down_counter[rows] + 1)
        up = self.up_counter[rows] >= o.patience
        down = ~up & (self.down_counter[rows] >= o.patience)
        self.cost[rows] = np.where(up, self.cost[rows] * o.cost_up,
                                   np.where(down, self.cost[rows] / o.cost_down, self.cost[rows]))
        self.up_counter[rows] = np.where(up, 0, self.up_counter[rows])
        self.down_counter[rows] = np.where(down, 0, self.down_counter[rows])
        self.raised[rows] |= up
        self.lowered[rows] |= down
        return improved


def _to_unit(theta: torch.Tensor) -> torch.Tensor:
    return torch.tanh(theta) / 2 + 0.5


def _optimise(model, images: torch.Tensor, classes: list, options: NCOptions, seed: int, device) -> dict:
    """Optimise the masks/patterns of ``classes`` together; returns per-class numpy results."""
    count, (channels, height, width) = len(classes), images.shape[1:]
    init = generator(seed, "nc-init")
    # Every class starts from the same random point, so results do not depend on which classes run together.
    mask_theta = torch.randn(1, 1, height, width, generator=init).expand(count, -1, -1, -1).clone()
    pattern_theta = torch.randn(1, channels, height, width, generator=init).expand(count, -1, -1, -1).clone()
    mask_theta = mask_theta.to(device).requires_grad_()
    pattern_theta = pattern_theta.to(device).requires_grad_()
    optimizer = torch.optim.Adam([mask_theta, pattern_theta], lr=options.lr, betas=tuple(options.betas))
    labels = torch.tensor(classes, device=device)
    schedule = CostSchedule(count, options)
    best_mask = torch.zeros(count, 1, height, width)
    best_pattern = torch.zeros(count, channels, height, width)
    steps_per_epoch = options.steps_per_epoch or math.ceil(len(images) / options.batch_size)
    epochs_run = np.zeros(count, int)
    steps = 0
    for epoch in range(options.epochs):
        active = np.flatnonzero(~schedule.done)
        if len(active) == 0:
            break
        rows = torch.from_numpy(active).to(device)
        order = torch.randperm(len(images), generator=generator(seed, f"nc-epoch-{epoch}"))
        hits = torch.zeros(len(active), device=device)
        seen = 0
        norms = torch.zeros(len(active), device=device)
        for step in range(steps_per_epoch):
            start = (step * options.batch_size) % len(images)
            batch = images[order[start:start + options.batch_size]].to(device).float().div_(255.0)
            mask, pattern = _to_unit(mask_theta[rows]), _to_unit(pattern_theta[rows])
            stamped = (1 - mask[:, None]) * batch[None] + (mask * pattern)[:, None]   # (A, B, C, H, W)
            logits = model(stamped.flatten(0, 1)).view(len(active), len(batch), -1)
            target = labels[rows][:, None].expand(-1, len(batch))
            ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(len(active), -1).mean(1)
            l1 = mask.flatten(1).sum(1)
            cost = torch.from_numpy(schedule.cost[active]).to(device, torch.float32)
            optimizer.zero_grad(set_to_none=True)
            (ce + cost * l1).sum().backward()
            optimizer.step()
            with torch.no_grad():
                hits += (logits.argmax(2) == target).float().sum(1)
                norms += l1.detach()
            seen += len(batch)
            steps += 1
        success = (hits / seen).cpu().numpy()
        norm = (norms / steps_per_epoch).cpu().numpy()
        improved = schedule.update(active, success, norm)
        epochs_run[active] += 1
        if improved.any():
            keep = active[improved]
            with torch.no_grad():
                best_mask[keep] = _to_unit(mask_theta[torch.from_numpy(keep).to(device)]).cpu()
                best_pattern[keep] = _to_unit(pattern_theta[torch.from_numpy(keep).to(device)]).cpu()
    return {"mask": best_mask, "pattern": best_pattern, "norm": schedule.best_norm, "cost": schedule.cost,
            "epochs": epochs_run, "found": np.isfinite(schedule.best_norm), "steps": steps}


def anomaly_index(norms) -> np.ndarray:
    """|x − median| / (1.4826·MAD) of the mask norms (Wang et al.; 1.4826 makes MAD consistent
    with the standard deviation of a normal distribution)."""
    norms = np.asarray(norms, dtype=float)
    median = np.median(norms)
    mad = 1.4826 * np.median(np.abs(norms - median))
    if mad == 0:
        return np.where(norms == median, 0.0, np.inf)
    return np.abs(norms - median) / mad


def flagged_classes(norms, threshold: float = 2.0) -> list:
    """Classes whose mask norm is below the median with an anomaly index above ``threshold``."""
    norms = np.asarray(norms, dtype=float)
    index = anomaly_index(norms)
    return [int(c) for c in np.flatnonzero((norms < np.median(norms)) & (index > threshold))]


def neural_cleanse(model, clean_images: torch.Tensor, num_classes: int, options: NCOptions = NCOptions(),
                   seed: int = 0, device="cpu", classes=None, sequential: bool = False) -> dict:
    """Reverse-engineer a trigger for each class; returns masks, patterns, norms, anomaly indices,
    the flagged classes and timing. ``clean_images`` are uint8 (N,C,H,W) the defender holds."""
    device = torch.device(device)
    classes = list(range(num_classes)) if classes is None else list(classes)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    started = time.perf_counter()
    try:
        if sequential:
            parts = [_optimise(model, clean_images, [c], options, seed, device) for c in classes]
            result = {key: (torch.cat([p[key] for p in parts]) if isinstance(parts[0][key], torch.Tensor)
                            else sum(p[key] for p in parts) if key == "steps"
                            else np.concatenate([p[key] for p in parts])) for key in parts[0]}
        else:
            result = _optimise(model, clean_images, classes, options, seed, device)
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    seconds = time.perf_counter() - started
    norms = np.where(result["found"], result["norm"], np.nan)
    finite = np.nan_to_num(norms, nan=float(np.nanmax(norms)) if np.isfinite(norms).any() else 0.0)
    return {**result, "classes": classes, "norm": norms, "anomaly_index": anomaly_index(finite),
            "flagged": [classes[i] for i in flagged_classes(finite)], "seconds": seconds}
