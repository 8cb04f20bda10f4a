"""Batched forward passes over uint8 images: the one loop that training, evaluation, pruning and
Neural Cleanse use to predict, to read the taps s1 s2 s3 and to measure BA/ASR (paper §3.4).

Images stay uint8 on the CPU until a batch is moved to the device and scaled to [0, 1]; a
``transform`` (a trigger) is applied on the device. Every pass runs in eval mode without
gradients and restores the model's mode afterwards.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn

import models


def autocast(device: torch.device, enabled):
    """Autocast for ``--amp``, on CUDA or the CPU: ``enabled`` is False (a no-op), True (bf16) or the
    dtype to compute in (torch.bfloat16, or torch.float16 with ``--amp_dtype fp16``). bf16 keeps
    float32's exponent range, so it needs no loss scaling; fp16's training scales the loss (the
    trainer's GradScaler). The losses compute in float32 either way."""
    dtype = enabled if isinstance(enabled, torch.dtype) else torch.bfloat16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=bool(enabled))


def to_unit(images_uint8: torch.Tensor, device) -> torch.Tensor:
    """uint8 (N,C,H,W) → float in [0, 1] on ``device`` (pinned, asynchronous copy on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda" and images_uint8.device.type == "cpu":
        images_uint8 = images_uint8.pin_memory()
    return images_uint8.to(device, non_blocking=True).float().div_(255.0)


@contextmanager
def recording(model: nn.Module, modules: dict, on: str = "output"):
    """Inside the block, ``recorded[name]`` is the latest output (with ``on="input"``, the first
    input) of each of ``modules``."""
    recorded = {}
    if on == "input":
        handles = [module.register_forward_pre_hook(lambda m, i, name=name: recorded.__setitem__(name, i[0]))
                   for name, module in modules.items()]
    else:
        handles = [module.register_forward_hook(lambda m, i, o, name=name: recorded.__setitem__(name, o))
                   for name, module in modules.items()]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def forward_batches(model: nn.Module, images_uint8: torch.Tensor, device, batch_size: int = 512,
                    transform=None, amp: bool = False):
    """Yield the logits of each batch of ``images_uint8`` (optionally triggered by ``transform``)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images_uint8), batch_size):
            chunk = to_unit(images_uint8[start:start + batch_size], device)
            if transform is not None:
                chunk = transform(chunk)
            with autocast(device, amp):
                yield model(chunk)
    finally:
        model.train(was_training)


def predict(model, images_uint8: torch.Tensor, device, batch_size: int = 512, transform=None,
            amp: bool = False) -> torch.Tensor:
    """Predicted labels (CPU int64)."""
    predictions = [logits.argmax(1).cpu()
                   for logits in forward_batches(model, images_uint8, device, batch_size, transform, amp)]
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long)


def extract(model, images_uint8: torch.Tensor, device, levels=models.LEVELS, batch_size: int = 512,
            transform=None, amp: bool = False) -> dict:
    """{level: (N, d) float32 CPU tensor}: each tap's output, flattened, in input order."""
    collected = {level: [] for level in levels}
    with recording(model, models.tap_modules(model, levels)) as recorded:
        for _ in forward_batches(model, images_uint8, device, batch_size, transform, amp):
            for level in levels:
                collected[level].append(recorded[level].flatten(1).float().cpu())
    return {level: torch.cat(parts) if parts else torch.empty(0) for level, parts in collected.items()}


def tap_shapes(model, images_uint8: torch.Tensor, device, levels=models.LEVELS) -> dict:
    """{level: (C, H, W)}: the shape of each tap's output for one image (extract flattens them)."""
    with recording(model, models.tap_modules(model, levels)) as recorded:
        for _ in forward_batches(model, images_uint8[:1], device, 1):
            return {level: tuple(recorded[level].shape[1:]) for level in levels}
    raise ValueError("tap_shapes needs at least one image")


def channel_means(model, module: nn.Module, images_uint8: torch.Tensor, device, batch_size: int = 512,
                  transform=None, on: str = "output") -> torch.Tensor:
    """Mean over samples and positions of each channel of ``module``'s output (or input, ``on="input"``) (C,)."""
    total, count = None, 0
    with recording(model, {"out": module}, on) as recorded:
        for _ in forward_batches(model, images_uint8, device, batch_size, transform):
            out = recorded["out"].float()
            per_channel = out.transpose(0, 1).flatten(1).sum(1) if out.dim() > 2 else out.sum(0)
            total = per_channel if total is None else total + per_channel
            count += out.shape[0] * (out[0, 0].numel() if out.dim() > 2 else 1)
    return (total / count).cpu()


def ba_asr(clean_pred: torch.Tensor, test_y: torch.Tensor, triggered_pred: torch.Tensor, target: int,
           sources=None) -> dict:
    """BA: accuracy on all clean test images. ASR: the share of triggered test images whose true
    class is not the target (``triggered_pred`` holds their predictions, in test-set order) that
    the model classifies as the target (paper §3.4). For a source-specific attack (``sources``,
    TaCT) the ASR counts the source classes' images alone, ``asr_other_classes`` the other
    non-target classes' (what the attack means not to move) and ``asr_worst_other_class`` the
    largest share of any one of them (a trigger may leak into one class only)."""
    def share(rows):
        return (triggered_pred[rows] == target).float().mean().item() if bool(rows.any()) else float("nan")

    result = {"ba": (clean_pred == test_y).float().mean().item()}
    everyone = torch.ones(len(triggered_pred), dtype=torch.bool)
    if sources is None:
        return {**result, "asr": share(everyone)}
    attacked_labels = test_y[test_y != target]
    in_source = torch.isin(attacked_labels, torch.as_tensor(list(sources)))
    others = [share(attacked_labels == label) for label in attacked_labels[~in_source].unique().tolist()]
    return {**result, "asr": share(in_source), "asr_other_classes": share(~in_source),
            "asr_worst_other_class": max(others, default=float("nan"))}


# A model that sends more than this share of the clean test images to one class is collapsed: its
# BA is about that class's share and its ASR (1 when the class is the target, 0 otherwise) measures
# nothing. Training (metrics.json) and erasing (defense_*.json) use the same rule.
COLLAPSE_SHARE = 0.5


def dominant_class(predictions: torch.Tensor) -> tuple:
    """(the class predicted most often, the share of ``predictions`` it takes)."""
    if len(predictions) == 0:
        return None, 0.0
    counts = torch.bincount(predictions)
    label = int(counts.argmax())
    return label, counts[label].item() / len(predictions)


def collapsed_to(predictions: torch.Tensor, share: float = COLLAPSE_SHARE):
    """The class taking more than ``share`` of the clean ``predictions``, or None (see COLLAPSE_SHARE)."""
    label, taken = dominant_class(predictions)
    return label if len(predictions) >= 2 and taken > share else None


def source_classes(attack):
    """A source-specific attack's source classes (TaCT), or None: any trigger callable works."""
    return getattr(attack, "source_classes", None)


def attacked_mask(test_y: torch.Tensor, attack, target: int) -> torch.Tensor:
    """The test images an attack means to move to the target: every class but the target, or a
    source-specific attack's source classes (TaCT)."""
    mask = test_y != target
    sources = source_classes(attack)
    return mask if sources is None else mask & torch.isin(test_y, torch.as_tensor(list(sources)))


def clean_and_triggered_predictions(model, test_x: torch.Tensor, test_y: torch.Tensor, attack, target: int, device,
                                    batch_size: int = 512, amp: bool = False) -> tuple:
    """(predictions on every clean test image, predictions on the triggered non-target ones)."""
    clean = predict(model, test_x, device, batch_size, amp=amp)
    triggered = predict(model, test_x[test_y != target], device, batch_size, transform=attack, amp=amp)
    return clean, triggered


def benign_accuracy_and_asr(model, test_x: torch.Tensor, test_y: torch.Tensor, attack, target: int, device,
                            batch_size: int = 512, amp: bool = False) -> dict:
    """:func:`ba_asr` of the model's predictions on the test set."""
    clean, triggered = clean_and_triggered_predictions(model, test_x, test_y, attack, target, device, batch_size, amp)
    return ba_asr(clean, test_y, triggered, target, source_classes(attack))


@dataclass
class Subject:
    """A trained model and what every analysis of it needs: its data, its trigger and target, the
    device, the seed that derives every sample the analyses draw, and the batch size."""

    model: nn.Module
    data: object            # datasets.ImageDataset
    attack: object          # attacks.Attack: x in [0, 1] → triggered x′
    target: int
    device: torch.device
    seed: int = 0
    batch_size: int = 512
    amp: bool = False
    poison_ratio: float = 0.1   # how the training set was poisoned: what class-level detectors inspect
    poison_mode: str = "add"
    cover_ratio: float = None

    def predict(self, images_uint8, triggered: bool = False) -> torch.Tensor:
        return predict(self.model, images_uint8, self.device, self.batch_size,
                       self.attack if triggered else None, self.amp)

    def extract(self, images_uint8, triggered: bool = False, levels=models.LEVELS) -> dict:
        return extract(self.model, images_uint8, self.device, levels, self.batch_size,
                       self.attack if triggered else None, self.amp)

    def ba_asr(self) -> dict:
        return benign_accuracy_and_asr(self.model, self.data.test_x, self.data.test_y, self.attack, self.target,
                                       self.device, self.batch_size, self.amp)
