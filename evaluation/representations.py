"""The feature-extraction service: load a run, predict, and read its taps s1 s2 s3.

Eval mode, no gradients, a fixed order, batched; each tap's output is flattened to (N, d)
float32 on the CPU. Every later analysis (distances, detections, figures, defenses) uses it.
"""
from dataclasses import dataclass
from pathlib import Path

import torch

import models
from training.evaluation import predict
from training.run import Prepared, prepare
from utils.config import RunConfig
from utils.errors import UserError
from utils.io import load_checkpoint


def load_trained(config: RunConfig) -> tuple:
    """(Prepared, checkpoint) for the run the flags name, with its trained weights loaded."""
    path = Path(config.out_dir) / config.run_name / "model.pt"
    if not path.is_file():
        raise UserError(f"no trained run at {path}; train it first with python main.py and the same "
                        f"flags (or pass --out_dir/--run_name)")
    try:
        checkpoint = load_checkpoint(path)
    except Exception as exc:
        raise UserError(f"cannot load {path} ({type(exc).__name__}); retrain the run") from None
    prepared = prepare(config)
    try:
        prepared.model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"{path} does not match --model_name {config.model_name} --width {config.width} "
                        f"({str(exc).splitlines()[0]}); pass the flags the run was trained with") from None
    prepared.model.eval()
    return prepared, checkpoint


@torch.no_grad()
def extract(model, images_uint8: torch.Tensor, device, levels=models.LEVELS, batch_size: int = 256,
            transform=None) -> dict:
    """{level: (N, d) float32 CPU tensor} of the taps' outputs for uint8 images, in order."""
    device = torch.device(device)
    collected = {level: [] for level in levels}
    current = {}
    handles = [module.register_forward_hook(lambda m, i, o, level=level: current.__setitem__(level, o))
               for level, module in models.tap_modules(model, levels).items()]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images_uint8), batch_size):
            chunk = images_uint8[start:start + batch_size].to(device).float().div_(255.0)
            model(transform(chunk) if transform is not None else chunk)
            for level in levels:
                collected[level].append(current[level].flatten(1).float().cpu())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {level: torch.cat(parts) if parts else torch.empty(0) for level, parts in collected.items()}


@dataclass
class PredictedGroups:
    """Indices into the test set of the paper's §4 groups, from the model's predictions.

    benign[j]: clean test images classified as j (Z^T_j); malicious: test images whose true
    class is not the target that, triggered, are classified as the target (Z^V_t).
    """

    clean_pred: torch.Tensor
    triggered_pred: torch.Tensor
    non_target_index: torch.Tensor
    target: int

    def benign(self, label: int) -> torch.Tensor:
        return (self.clean_pred == label).nonzero().flatten()

    @property
    def malicious(self) -> torch.Tensor:
        return self.non_target_index[self.triggered_pred == self.target]


def malicious_index(prepared: Prepared) -> tuple:
    """(non-target test indices, their triggered predictions, Z^V_t's indices into the test set)."""
    config, data = prepared.config, prepared.data
    non_target = (data.test_y != config.target).nonzero().flatten()
    triggered_pred = predict(prepared.model, data.test_x[non_target], prepared.device,
                             config.eval_batch_size, transform=prepared.attack)
    return non_target, triggered_pred, non_target[triggered_pred == config.target]


def test_groups(prepared: Prepared) -> PredictedGroups:
    config, data = prepared.config, prepared.data
    clean_pred = predict(prepared.model, data.test_x, prepared.device, config.eval_batch_size)
    non_target, triggered_pred, _ = malicious_index(prepared)
    return PredictedGroups(clean_pred, triggered_pred, non_target, config.target)


def sample(index: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``count`` of ``index``, a seeded random choice (all of them when fewer exist)."""
    order = torch.randperm(len(index), generator=generator)
    return index[order[:count]]
