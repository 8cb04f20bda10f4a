"""One run end to end: validate everything, train, write ``runs/<name>/``.

Everything that can fail on bad input (flags, dataset files, device) is checked before the run
directory is created, so bad input never leaves a partial run behind.
"""
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

import attacks
import datasets
import models
from attacks.poisoning import PoisonedData
from datasets.base import stratified_subset
from regularizers import describe
from training.trainer import Trainer
from utils.config import RunConfig
from utils.device import resolve_device
from utils.errors import UserError
from utils.io import save_csv, save_json, save_torch
from utils.seed import seed_everything


@dataclass
class Prepared:
    config: RunConfig
    device: torch.device
    data: datasets.ImageDataset
    attack: attacks.Attack
    model: torch.nn.Module


def prepare(config: RunConfig) -> Prepared:
    """Device, data, attack and an initialised model for ``config``; raises UserError on bad input."""
    device = resolve_device(config.device)
    if config.amp and device.type != "cuda":
        raise UserError("--amp needs a CUDA device; drop --amp or run with --device cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    seed_everything(config.seed)
    data = datasets.build(config.data_name, data_path=config.data_path, seed=config.seed,
                          download=config.download)
    if not 0 <= config.target < data.num_classes:
        raise UserError(f"--target {config.target} is outside {config.data_name}'s classes "
                        f"0..{data.num_classes - 1}")
    if config.train_subset is not None:
        keep = stratified_subset(data.train_y, config.train_subset, config.seed)
        data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
    attack = attacks.build_from_config(config.attack_name, config)  # WaNet's field takes config.seed
    model = models.build(config.model_name, num_classes=data.num_classes, width=config.width).to(device)
    return Prepared(config, device, data, attack, model)


def resolved_config(prepared: Prepared, poisoned: PoisonedData) -> dict:
    """config.json: the flags plus what they resolved to, so a run describes itself."""
    config = prepared.config
    return {**config.to_dict(),
            "resolved": {"method": config.method, "levels": list(config.levels),
                         "kernel": describe(config.kernel), "device": str(prepared.device),
                         "num_classes": prepared.data.num_classes,
                         "train_size": len(prepared.data.train_y), "test_size": len(prepared.data.test_y),
                         "poisoned": len(poisoned.poison_index), "noise": len(poisoned.noise_index),
                         "training_set_size": len(poisoned), "taps": dict(prepared.model.taps),
                         "attack": prepared.attack.params(),
                         "torch": str(torch.__version__), "python": platform.python_version()}}


def train_run(config: RunConfig) -> dict:
    """Train one run and write its directory; returns the final metrics (with ``run_dir``)."""
    prepared = prepare(config)
    poisoned = PoisonedData(prepared.data.train_x, prepared.data.train_y, prepared.attack, config.target,
                            config.poison_ratio, config.poison_mode, config.seed, prepared.device,
                            config.augment)
    run_dir = Path(config.out_dir) / config.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    config_record = resolved_config(prepared, poisoned)
    save_json(config_record, run_dir / "config.json")
    trainer = Trainer(prepared.model, poisoned, config, prepared.device)
    try:
        history = trainer.fit(prepared.data.test_x, prepared.data.test_y,
                              on_epoch=lambda rows: save_csv(rows, run_dir / "history.csv"))
    finally:
        trainer.close()
    final = history[-1]
    metrics = {"ba": final["ba"], "asr": final["asr"], "method": config.method,
               "run_name": config.run_name, "epochs": len(history),
               "train_seconds": round(sum(row["seconds"] for row in history), 3), "history": history}
    save_json(metrics, run_dir / "metrics.json")
    state = {key: value.detach().cpu() for key, value in prepared.model.state_dict().items()}
    save_torch({"state_dict": state, "config": config_record,
                "metrics": {key: value for key, value in metrics.items() if key != "history"}},
               run_dir / "model.pt")
    return {**metrics, "run_dir": str(run_dir)}
