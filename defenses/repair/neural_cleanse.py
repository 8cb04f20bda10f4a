"""Neural Cleanse trigger synthesis (Wang et al., S&P 2019; paper §6.2), all classes at once.

For every class c a mask m_c (H×W) and a pattern p_c (C×H×W), both in [0,1] through
m = tanh(θ)/2 + ½, are optimised so that (1 − m)⊙x + m⊙p is classified as c, minimising
CE + cost_c·‖m_c‖₁ on clean data. The K classes' masks and patterns are stacked and run through
the model in one batched forward pass per step; each class keeps its own cost schedule and early
stop (the reference implementation's rules), and a finished class leaves the batch. Adam is
element-wise, so stacking changes nothing about each class's optimisation: ``sequential=True``
runs the same procedure one class after another, for comparison.

As in the authors' code (bolunwang/backdoor, ``visualizer.py`` with the settings of
``gtsrb_visualize_example.py``): each class starts from its own uniform random mask and pattern
(seeded by the class here, so batched and sequential runs agree); the cost starts at 0 and is set
to ``init_cost`` once the attack has succeeded for ``patience`` epochs; an "epoch" is 31
mini-batches of 32 (their ``MINI_BATCH = 1000 // 32``), at most 1000 of them (their ``STEPS``),
with an early stop after 25 epochs in which the best norm did not fall below 1.0 × its previous
best (their ``EARLY_STOP_THRESHOLD = 1.0``), once the cost has moved both up and down; the
result is the smallest-norm mask that reached 99% attack success, or, for a class that never
did, the last mask; its norm is the l1 norm of that mask (the reference's outlier detection
reads the saved masks back).

Paper §6.2 judges NC by "the distinguishability of the l1 norm" (Fig. 8): :func:`target_ranking`
gives the target's rank among the classes' norms and its ratio to the others' median, beside
Wang et al.'s anomaly index.
"""
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from inference import Subject, to_unit
from utils.io import load_checkpoint, save_torch
from utils.params import check_params, param
from utils.progress import bar_disabled
from utils.seed import generator, sample


@dataclass
class NCOptions:
    """Defaults of the reference implementation; each is a defend.py flag ``--nc_<name>`` (the
    defender's data, ``--clean_samples`` and ``--sequential``, keep their short names)."""

    clean_samples: int = param(1000, "clean training images the defender holds, a seeded sample (the "
                               "reference's NB_SAMPLE; the reference itself streams its whole test set)",
                               low=1, flag="--clean_samples")
    sequential: bool = param(False, "optimise one class after another instead of all classes in one batch",
                             flag="--sequential")
    lr: float = param(0.1, "Adam learning rate (0.1)", low=0.0, low_open=True)
    betas: tuple = (0.5, 0.9)
    init_cost: float = param(1e-3, "cost λ_c once set (1e-3); it starts at 0 as the reference's "
                             "RESET_COST_TO_ZERO and is set to this after --nc_patience successful epochs", low=0.0)
    start_at_init_cost: bool = param(False, "start the cost at --nc_init_cost instead of 0 (the reference "
                                     "starts at 0: its RESET_COST_TO_ZERO)", flag="--nc_start_at_init_cost")
    attack_threshold: float = param(0.99, "attack success a mask must reach (0.99)", low=0.0, high=1.0,
                                     low_open=True)
    patience: int = param(5, "epochs before a cost change (5)", low=1)
    cost_up: float = param(2.0, "cost multiplier up (2)", low=1.0, low_open=True)
    cost_down: float = param(2.0 ** 1.5, "cost divisor down (2^1.5)", low=1.0, low_open=True)
    early_stop_patience: int = param(25, "epochs without a better mask before stopping, once the cost moved "
                                     "both ways (25, the reference script's 5 × patience)", low=1)
    early_stop_threshold: float = param(1.0, "a mask is better if its norm is below this × the best so far "
                                        "(1.0, the reference script; its library default is 0.99)",
                                        low=0.0, high=1.0, low_open=True)
    batch_size: int = param(32, "images per class per step (32)", low=1)
    epochs: int = param(1000, "epoch budget (1000, the reference's STEPS; early stopping usually ends sooner)",
                        low=1)
    steps_per_epoch: int = param(31, "mini-batches per epoch (31, the reference's MINI_BATCH = 1000 // 32; "
                                 "0: clean samples / batch size)", low=0)

    def __post_init__(self):
        check_params(self)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["betas"] = list(self.betas)
        return values

    def identity(self) -> dict:
        """What a run's ``inputs_hash`` and the resume checkpoint compare: the fields under the names
        they had when the first results were written, so renaming a field (``start_at_init_cost`` was
        ``start_cost_at_zero``, its negation) does not make every finished Neural Cleanse stale."""
        values = self.to_dict()
        values["start_cost_at_zero"] = not values.pop("start_at_init_cost")
        return values


class CostSchedule:
    """The reference's per-epoch bookkeeping, vectorised over classes (numpy arrays of length K)."""

    def __init__(self, count: int, options: NCOptions):
        self.o = options
        self.cost = np.full(count, options.init_cost if options.start_at_init_cost else 0.0)
        self.best_norm = np.full(count, np.inf)
        self.early_best = np.full(count, np.inf)
        self.up_counter = np.zeros(count, int)
        self.down_counter = np.zeros(count, int)
        self.set_counter = np.zeros(count, int)
        self.early_counter = np.zeros(count, int)
        self.raised = np.zeros(count, bool)
        self.lowered = np.zeros(count, bool)
        self.done = np.zeros(count, bool)

    STATE = ("cost", "best_norm", "early_best", "up_counter", "down_counter", "set_counter", "early_counter",
             "raised", "lowered", "done")

    def state(self) -> dict:
        return {name: torch.from_numpy(getattr(self, name).copy()) for name in self.STATE}

    def restore(self, state: dict) -> None:
        for name in self.STATE:
            setattr(self, name, state[name].numpy().copy())

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
        # a zero cost is set to the initial one after `patience` successful epochs, which restarts
        # the up/down bookkeeping
        zero = (self.cost[rows] == 0) & succeeded
        self.set_counter[rows] = np.where(zero, self.set_counter[rows] + 1, 0)
        reset = self.set_counter[rows] >= o.patience
        self.cost[rows] = np.where(reset, o.init_cost, self.cost[rows])
        for counter in (self.up_counter, self.down_counter):
            counter[rows] = np.where(reset, 0, counter[rows])
        for flag in (self.raised, self.lowered):
            flag[rows] &= ~reset
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


@dataclass
class NCCheckpoint:
    """Where an interrupted Neural Cleanse resumes: the optimisation's whole state (masks, patterns,
    Adam's moments, the cost schedule, the best masks so far), written atomically at most every
    ``every_s`` seconds and read back only when it was written for the same ``key`` (the caller's
    identity of model and options) and the same classes, options and seed. Every epoch's batch
    order is seeded by the epoch, so a resumed run ends with the numbers of an uninterrupted one.
    At the reference's budget one run can take most of an hour on a CPU."""

    path: Path
    key: dict
    every_s: float = 60.0

    def _identity(self, classes: list, options: NCOptions, seed: int) -> dict:
        return {"key": self.key, "classes": list(classes), "options": options.identity(), "seed": seed}

    def load(self, classes: list, options: NCOptions, seed: int) -> Optional[dict]:
        """The saved state, or None when there is none for this optimisation (another one's is ignored
        and later overwritten)."""
        if not Path(self.path).is_file():
            return None
        try:
            state = load_checkpoint(self.path)
        except Exception:  # a file from another version or a foreign one: start afresh
            return None
        return state if state.get("identity") == self._identity(classes, options, seed) else None

    def save(self, state: dict, classes: list, options: NCOptions, seed: int) -> None:
        save_torch({**state, "identity": self._identity(classes, options, seed)}, self.path)

    def clear(self) -> None:
        Path(self.path).unlink(missing_ok=True)


def _tanh_to_unit(theta: torch.Tensor) -> torch.Tensor:
    return torch.tanh(theta) / 2 + 0.5


def _to_theta(unit: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_tanh_to_unit`, kept finite at 0 and 1 as the reference does with K.epsilon()."""
    return torch.atanh((unit - 0.5) * (2 - 1e-7))


def initial_thetas(classes: list, shape: tuple, seed: int) -> tuple:
    """Each class's own uniform random mask (H×W) and pattern (C×H×W) in [0,1), as the reference
    (np.random.random), in tanh space. Seeded by (seed, class), so a class starts from the same
    point whichever classes run beside it."""
    channels, height, width = shape
    masks, patterns = [], []
    for label in classes:
        init = generator(seed, f"nc-init-class-{label}")
        masks.append(torch.rand(1, height, width, generator=init))
        patterns.append(torch.rand(channels, height, width, generator=init))
    return _to_theta(torch.stack(masks)), _to_theta(torch.stack(patterns))


def _optimise(model, images: torch.Tensor, classes: list, options: NCOptions, seed: int, device,
              progress: bool = False, checkpoint: Optional[NCCheckpoint] = None) -> dict:
    """Optimise the masks/patterns of ``classes`` together; returns per-class numpy results. With a
    ``checkpoint``, it starts from the saved state when there is one and saves its own as it goes."""
    count, (channels, height, width) = len(classes), images.shape[1:]
    mask_theta, pattern_theta = initial_thetas(classes, (channels, height, width), seed)
    mask_theta = mask_theta.to(device).requires_grad_()
    pattern_theta = pattern_theta.to(device).requires_grad_()
    optimizer = torch.optim.Adam([mask_theta, pattern_theta], lr=options.lr, betas=tuple(options.betas))
    labels = torch.tensor(classes, device=device)
    schedule = CostSchedule(count, options)
    best_mask = torch.zeros(count, 1, height, width)
    best_pattern = torch.zeros(count, channels, height, width)
    steps_per_epoch = options.steps_per_epoch or math.ceil(len(images) / options.batch_size)
    epochs_run = np.zeros(count, int)
    steps, first_epoch, earlier_seconds = 0, 0, 0.0
    saved = checkpoint.load(classes, options, seed) if checkpoint else None
    if saved:
        with torch.no_grad():
            mask_theta.copy_(saved["mask_theta"])
            pattern_theta.copy_(saved["pattern_theta"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.restore(saved["schedule"])
        best_mask, best_pattern = saved["best_mask"], saved["best_pattern"]
        epochs_run = saved["epochs_run"].numpy().copy()
        steps, first_epoch, earlier_seconds = saved["steps"], saved["next_epoch"], saved["seconds"]
    started = last_save = time.perf_counter()
    bar = tqdm(range(first_epoch, options.epochs), initial=first_epoch, total=options.epochs,
               desc=f"nc {classes[0]}" if count == 1 else "nc", disable=bar_disabled(progress), dynamic_ncols=True, leave=False)
    for epoch in bar:
        active = np.flatnonzero(~schedule.done)
        if len(active) == 0:
            break
        bar.set_postfix(classes_left=len(active))
        rows = torch.from_numpy(active).to(device)
        order = torch.randperm(len(images), generator=generator(seed, f"nc-epoch-{epoch}"))
        hits = torch.zeros(len(active), device=device)
        seen = 0
        norms = torch.zeros(len(active), device=device)
        for step in range(steps_per_epoch):
            start = (step * options.batch_size) % len(images)
            batch = to_unit(images[order[start:start + options.batch_size]], device)
            mask, pattern = _tanh_to_unit(mask_theta[rows]), _tanh_to_unit(pattern_theta[rows])
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
                best_mask[keep] = _tanh_to_unit(mask_theta[torch.from_numpy(keep).to(device)]).cpu()
                best_pattern[keep] = _tanh_to_unit(pattern_theta[torch.from_numpy(keep).to(device)]).cpu()
        if checkpoint and time.perf_counter() - last_save >= checkpoint.every_s:
            last_save = time.perf_counter()
            checkpoint.save({"next_epoch": epoch + 1, "steps": steps, "seconds": earlier_seconds + last_save - started,
                             "mask_theta": mask_theta.detach().cpu(), "pattern_theta": pattern_theta.detach().cpu(),
                             "optimizer": optimizer.state_dict(), "schedule": schedule.state(),
                             "best_mask": best_mask, "best_pattern": best_pattern,
                             "epochs_run": torch.from_numpy(epochs_run.copy())}, classes, options, seed)
    found = np.isfinite(schedule.best_norm)
    missing = np.flatnonzero(~found)
    if len(missing):  # a class that never reached the attack threshold keeps its last mask
        with torch.no_grad():
            rows = torch.from_numpy(missing).to(device)
            best_mask[missing] = _tanh_to_unit(mask_theta[rows]).cpu()
            best_pattern[missing] = _tanh_to_unit(pattern_theta[rows]).cpu()
    # The reference's outlier detection reads each saved mask back and takes its l1 norm.
    norm = best_mask.flatten(1).sum(1).double().numpy()
    return {"mask": best_mask, "pattern": best_pattern, "norm": norm, "cost": schedule.cost,
            "epochs": epochs_run, "found": found, "steps": steps, "earlier_seconds": earlier_seconds}


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


def target_ranking(norms, target: int) -> dict:
    """Paper §6.2 / Fig. 8, "the distinguishability of the l1 norm": the target's rank among the
    classes' mask norms (1 = smallest) and its norm over the median of the other classes' norms."""
    norms = np.asarray(norms, dtype=float)
    others = np.delete(norms, target)
    median = float(np.median(others))
    return {"target_l1_rank": int((norms < norms[target]).sum()) + 1, "classes": len(norms),
            "target_l1_ratio_to_median": float(norms[target] / median) if median > 0 else float("inf")}


def neural_cleanse(model, clean_images: torch.Tensor, num_classes: int, options: NCOptions = None,
                   seed: int = 0, device="cpu", classes=None, sequential: bool = None, progress: bool = False,
                   checkpoint: Optional[NCCheckpoint] = None) -> dict:
    """Reverse-engineer a trigger for each class; returns masks, patterns, norms, anomaly indices,
    the flagged classes and timing. ``clean_images`` are uint8 (N,C,H,W) the defender holds;
    ``sequential`` defaults to ``options.sequential``. With a ``checkpoint`` an interrupted call
    resumes (sequentially: within the class it was optimising); ``seconds`` counts every attempt."""
    device = torch.device(device)
    options = options or NCOptions()
    sequential = options.sequential if sequential is None else sequential
    classes = list(range(num_classes)) if classes is None else list(classes)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    started = time.perf_counter()
    try:
        if sequential:
            parts = [_optimise(model, clean_images, [c], options, seed, device, progress, checkpoint) for c in classes]
            result = {key: (torch.cat([p[key] for p in parts]) if isinstance(parts[0][key], torch.Tensor)
                            else sum(p[key] for p in parts) if key in ("steps", "earlier_seconds")
                            else np.concatenate([p[key] for p in parts])) for key in parts[0]}
        else:
            result = _optimise(model, clean_images, classes, options, seed, device, progress, checkpoint)
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    seconds = time.perf_counter() - started + result.pop("earlier_seconds")
    return {**result, "classes": classes, "anomaly_index": anomaly_index(result["norm"]),
            "flagged": [classes[i] for i in flagged_classes(result["norm"])], "seconds": seconds}


def clean_index(size: int, count: int, seed: int) -> torch.Tensor:
    """Sorted indices of the defender's clean data: a seeded sample of ``count`` of ``size`` clean
    training images (every defense that holds clean data draws it here)."""
    return sample(torch.arange(size), count, generator(seed, "defender-clean")).sort().values


def clean_sample(train_x: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """The defender's clean data: a seeded sample of ``count`` clean training images, in order."""
    return train_x[clean_index(len(train_x), count, seed)]


def reverse_engineer(subject: Subject, options: NCOptions = None, progress: bool = False,
                     checkpoint: Optional[NCCheckpoint] = None) -> dict:
    """Neural Cleanse on a trained model with the defender's clean sample: every class's mask and
    pattern, their l1 norms, the target's ranking among them (§6.2, Fig. 8) and the anomaly index."""
    options = options or NCOptions()
    clean = clean_sample(subject.data.train_x, options.clean_samples, subject.seed)
    found = neural_cleanse(subject.model, clean, subject.data.num_classes, options, subject.seed, subject.device,
                           progress=progress, checkpoint=checkpoint)
    norms = [float(v) for v in found["norm"]]
    return {"clean_samples": len(clean), "sequential": options.sequential, "options": options.to_dict(),
            "norms": norms, "reached_threshold": found["found"].tolist(), **target_ranking(norms, subject.target),
            "anomaly_index": [float(v) for v in found["anomaly_index"]], "flagged": found["flagged"],
            "target_flagged": subject.target in found["flagged"],
            "target_anomaly_index": float(found["anomaly_index"][subject.target]),
            "epochs": found["epochs"].tolist(), "final_cost": found["cost"].tolist(), "steps": int(found["steps"]),
            "seconds": round(found["seconds"], 3), "mask": found["mask"], "pattern": found["pattern"]}
