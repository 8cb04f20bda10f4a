"""defend.py's library side: Neural Cleanse and pruning on a trained run, with reports and figures."""
from pathlib import Path

import torch

from defenses.neural_cleanse import NCOptions, neural_cleanse, target_ranking
from defenses.pruning import mean_channel_activation, prune_order, pruning_curve
from evaluation.representations import load_trained, sample
from models import tap_modules
from training.evaluation import benign_accuracy_and_asr
from utils.config import RunConfig
from utils.io import save_json, save_torch
from utils.seed import generator

DEFENSES = ("nc", "prune")


def clean_sample(prepared, count: int) -> torch.Tensor:
    """The defender's clean data: a seeded sample of ``count`` clean training images."""
    index = sample(torch.arange(len(prepared.data.train_y)), count, generator(prepared.config.seed, "defender-clean"))
    return prepared.data.train_x[index.sort().values]


def run_neural_cleanse(config: RunConfig, options: NCOptions, clean_samples: int, sequential: bool = False) -> dict:
    prepared, _ = load_trained(config)
    clean = clean_sample(prepared, clean_samples)
    found = neural_cleanse(prepared.model, clean, prepared.data.num_classes, options, config.seed,
                           prepared.device, sequential=sequential)
    norms = [float(v) for v in found["norm"]]
    result = {"run_name": config.run_name, "method": config.method, "mlmmdr_lamb": config.mlmmdr_lamb,
              "data_name": config.data_name, "model_name": config.model_name, "attack_name": config.attack_name,
              "target": config.target, "clean_samples": len(clean), "sequential": sequential,
              "options": options.to_dict(), "norms": norms, "reached_threshold": found["found"].tolist(),
              **target_ranking(norms, config.target),
              "anomaly_index": [float(v) for v in found["anomaly_index"]],
              "flagged": found["flagged"], "target_flagged": config.target in found["flagged"],
              "target_anomaly_index": float(found["anomaly_index"][config.target]),
              "epochs": found["epochs"].tolist(), "final_cost": found["cost"].tolist(),
              "steps": int(found["steps"]), "seconds": round(found["seconds"], 3)}
    run_dir = Path(config.out_dir) / config.run_name
    save_json(result, run_dir / "defense_nc.json")
    save_torch({"mask": found["mask"], "pattern": found["pattern"]}, run_dir / "defense_nc_triggers.pt")
    return {**result, "mask": found["mask"], "pattern": found["pattern"]}


def run_pruning(config: RunConfig, rank: str = "triggered") -> dict:
    prepared, _ = load_trained(config)
    data, attack, device = prepared.data, prepared.attack, prepared.device
    module = tap_modules(prepared.model, ("s3",))["s3"]
    non_target = data.test_x[data.test_y != config.target]
    triggered = mean_channel_activation(prepared.model, module, non_target, device, config.eval_batch_size, attack)
    clean = mean_channel_activation(prepared.model, module, data.test_x, device, config.eval_batch_size)
    order = prune_order(triggered, clean, rank)
    curve = pruning_curve(prepared.model, module, order,
                          lambda: benign_accuracy_and_asr(prepared.model, data.test_x, data.test_y, attack,
                                                          config.target, device, config.eval_batch_size))
    result = {"run_name": config.run_name, "method": config.method, "mlmmdr_lamb": config.mlmmdr_lamb,
              "data_name": config.data_name, "model_name": config.model_name, "attack_name": config.attack_name,
              "layer": prepared.model.taps["s3"], "channels": len(order), "rank": rank,
              "order": order.tolist(), "curve": curve}
    save_json(result, Path(config.out_dir) / config.run_name / "defense_prune.json")
    return result
