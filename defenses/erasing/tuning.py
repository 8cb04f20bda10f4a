"""Defender-side tuning of the erasing defenses, fixed before any result is read.

NAD's and ARGD's settings were made for a WideResNet-16-1 trained at lr 0.1. On another model they
may break it before they are compared: NAD's attention term is a mean over the H·W pixels of
unit-norm maps, so the same β weighs VGG-11's 4×4 and 2×2 levels about 16× more than WRN-16-1's
32×32 to 8×8 ones; and a model trained at lr 0.01 is shaken hard by two epochs at 0.1. A defender
would tune, on its own clean validation set (defenses/defender.py), never on the test set. The
grid and the rule are fixed here, before any number is read:

- grid: NAD and ARGD each start at lr ∈ {0.1, 0.03, 0.01, 0.003} (the later phases divided as in
  the reference) with every attention weight β multiplied by {1, 1/4, 1/16, 1/64}; fine-tuning starts
  at lr ∈ {0.01, 0.003, 0.001};
- rule (:func:`choose`): keep the settings whose final validation accuracy is at least the
  pre-defense validation accuracy minus 3 points, then take the largest β multiplier, then the
  largest lr (the strongest erasing that still keeps the model). When none is kept, the one with
  the best validation accuracy is taken and the record says the rule was not met.

Fine-tuning is tuned first; its chosen model is then the teacher of every NAD and ARGD candidate.
The reproduction chooses on each attack's RBT model and applies the choice unchanged to its
ML-MMDR model; the choice on each model itself is recorded too, as a sensitivity check.
"""
import copy
from dataclasses import asdict, dataclass, replace

from tqdm import tqdm

from defenses.erasing.train import DefenderOptions
from utils.params import check_params, param
from utils.progress import bar_disabled


@dataclass
class TuneOptions(DefenderOptions):
    """The tuning grid and tolerance: each field is a defend.py flag ``--tune_<name>`` (the
    defender's data flags are the erasing defenses')."""

    lrs: tuple = param((0.1, 0.03, 0.01, 0.003), "NAD's and ARGD's starting learning rates (the later phases are "
                       "divided as in the reference)", low=0.0, low_open=True, nargs="+", type=float)
    beta_scales: tuple = param((1.0, 0.25, 0.0625, 0.015625), "multipliers of NAD's and ARGD's attention weights β",
                               low=0.0, nargs="+", type=float)
    finetune_lrs: tuple = param((0.01, 0.003, 0.001), "fine-tuning's starting learning rates", low=0.0,
                                low_open=True, nargs="+", type=float)
    tolerance: float = param(0.03, "keep the settings whose final validation accuracy is at least the pre-defense "
                             "one minus this", low=0.0, high=1.0)

    def __post_init__(self):
        self.lrs, self.beta_scales, self.finetune_lrs = tuple(self.lrs), tuple(self.beta_scales), tuple(self.finetune_lrs)
        check_params(self)

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def choose(candidates: list, before_accuracy: float, tolerance: float) -> dict:
    """The rule: of ``candidates`` ({lr, beta_scale (absent for fine-tuning), validation_accuracy}),
    keep those whose validation accuracy ≥ ``before_accuracy`` − ``tolerance``, then take the
    largest beta_scale, then the largest lr. Returns {chosen, rule_met, kept}; with none kept,
    ``chosen`` is the best validation accuracy and ``rule_met`` False."""
    if not candidates:
        raise ValueError("no candidate settings to choose from")
    floor = before_accuracy - tolerance
    kept = [c for c in candidates if c["validation_accuracy"] >= floor - 1e-12]
    if not kept:
        best = max(candidates, key=lambda c: (c["validation_accuracy"], c.get("beta_scale", 1.0), c["lr"]))
        return {"chosen": best, "rule_met": False, "kept": 0}
    chosen = max(kept, key=lambda c: (c.get("beta_scale", 1.0), c["lr"]))
    return {"chosen": chosen, "rule_met": True, "kept": len(kept)}


def scaled(options, lr: float, beta_scale: float = None):
    """``options`` starting at ``lr`` (every phase scaled alike) and, for a distillation, with
    ``beta_scale``."""
    changes = {"lr_scale": lr / options.lrs[0]}
    if beta_scale is not None:
        changes["beta_scale"] = beta_scale
    return replace(options, **changes)


def settings_of(options) -> dict:
    """{lr (the starting one), beta_scale} of erasing ``options``, as the tuning records them."""
    found = {"lr": options.lr_at(0)}
    if hasattr(options, "beta_scale"):
        found["beta_scale"] = options.beta_scale
    return found


def tune_defense(subject, defense, base_options, grid: list, before_accuracy: float, tolerance: float, data,
                 progress: bool = True, **defense_args) -> dict:
    """Run ``defense(subject-with-a-copy-of-the-model, options, test=False, data=data,
    **defense_args)`` for each (lr, beta_scale) of ``grid`` and apply :func:`choose`. Returns
    {candidates, chosen, rule_met, kept, chosen_model} where ``chosen_model`` is the chosen
    candidate's erased model (for fine-tuning: the teacher of the others)."""
    candidates, models = [], []
    for lr, beta_scale in tqdm(grid, desc=f"tuning {defense.__name__}", disable=bar_disabled(progress), dynamic_ncols=True):
        options = scaled(base_options, lr, beta_scale)
        trial = replace(subject, model=copy.deepcopy(subject.model))
        result = defense(trial, options=options, progress=False, test=False, data=data, **defense_args)
        candidates.append({**settings_of(options), "validation_accuracy": result["after"]["validation_accuracy"],
                           "validation_history": [row["validation_accuracy"] for row in result["history"]],
                           "seconds": result["seconds"]})
        models.append(trial.model)
    decision = choose(candidates, before_accuracy, tolerance)
    chosen_model = models[candidates.index(decision["chosen"])]
    return {"candidates": candidates, **decision, "chosen_model": chosen_model}
