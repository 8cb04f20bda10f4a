"""Defender-side tuning of the erasing defenses, fixed before any result is read.

NAD's and ARGD's settings were made for a WideResNet-16-1 trained at lr 0.1. On another model they
may break it before they are compared: NAD's attention term is a mean over the H·W pixels of
unit-norm maps, so the same β weighs VGG-11's 4×4 and 2×2 levels about 16× more than WRN-16-1's
32×32 to 8×8 ones; and a model trained at lr 0.01 is shaken hard by two epochs at 0.1. A defender
would tune, on its own clean validation set (defenses/defender.py), never on the test set, and on
the model it holds. The grid and the rule are fixed here, before any number is read:

- grid: NAD and ARGD each start at lr ∈ {0.1, 0.03, 0.01, 0.003} (the later phases divided as in
  the reference) with every attention weight β multiplied by {1, 1/4, 1/16, 1/64}; fine-tuning starts
  at lr ∈ {0.1, 0.03, 0.01, 0.003, 0.001}, reaching the references' 0.1;
- tolerance, on exact counts (:func:`tolerance_images`): a candidate keeps the model when the number
  of validation images it classifies correctly after the defense is at least the number before it
  minus ⌊tolerance × validation images⌋ (3 points: 30 of 1,000), integers compared as integers;
- rule (:func:`choose`, ``RULE``): of the candidates that keep the model, take the strongest erasing:
  the largest starting lr first, then the largest β multiplier. When none is kept, the one with the
  most correct validation images is taken (ties: the strongest) and the record says the rule was
  not met.
- cost (``search``): the rule takes the first candidate that keeps the model in the order strongest
  first, so the tuning runs the candidates in that order and stops at the first one kept
  (``"ordered"``, the default): the same choice as running every candidate (``"full"``), at the
  cost of the candidates stronger than it (all of them only when none is kept). The record lists
  the candidates run and those skipped.

Fine-tuning is tuned first; its chosen model is then the teacher of every NAD and ARGD candidate.
The reproduction tunes every model it erases, RBT and ML-MMDR on every seed, on its own validation
set, as a defender holding that model would. Every record states this regime
(``erasing_regime``: :func:`regime`).
"""
import copy
from dataclasses import asdict, dataclass, replace

from tqdm import tqdm

from defenses.defender import exact_floor, share_record
from defenses.erasing.train import DefenderOptions
from utils.params import check_params, param
from utils.progress import bar_disabled


SEARCHES = ("ordered", "full")
RULE = ("keep the candidates whose count of correctly classified validation images after the defense is at least "
        "the count before it minus floor(tolerance x validation images), integers compared exactly; of those take "
        "the strongest erasing: the largest starting lr, then the largest beta multiplier; with none kept, the most "
        "correct validation images (ties: the strongest) and rule_met false")
REGIME = "exact counts; strongest first (lr, then beta); each model on its own validation set"  # named in every record


@dataclass
class TuneOptions(DefenderOptions):
    """The tuning grid and tolerance: each field is a defend.py flag ``--tune_<name>`` (the
    defender's data flags are the erasing defenses')."""

    lrs: tuple = param((0.1, 0.03, 0.01, 0.003), "NAD's and ARGD's starting learning rates (the later phases are "
                       "divided as in the reference)", low=0.0, low_open=True, nargs="+", type=float)
    beta_scales: tuple = param((1.0, 0.25, 0.0625, 0.015625), "multipliers of NAD's and ARGD's attention weights β",
                               low=0.0, nargs="+", type=float)
    finetune_lrs: tuple = param((0.1, 0.03, 0.01, 0.003, 0.001), "fine-tuning's starting learning rates (the "
                                "references': 0.1)", low=0.0, low_open=True, nargs="+", type=float)
    tolerance: float = param(0.03, "keep the settings whose count of correct validation images after the defense is "
                             "at least the count before it minus ⌊this × the validation images⌋ (exact integers)",
                             low=0.0, high=1.0)
    search: str = param("ordered", "'ordered': run the candidates strongest first (largest lr, then largest β) and "
                        "stop at the first that keeps the model, the rule's choice at a fraction of the cost; "
                        "'full': run every candidate (the same choice, every candidate's accuracy recorded)",
                        choices=SEARCHES)

    def __post_init__(self):
        self.lrs, self.beta_scales, self.finetune_lrs = tuple(self.lrs), tuple(self.beta_scales), tuple(self.finetune_lrs)
        check_params(self)

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def tolerance_images(tolerance: float, validation_images: int) -> int:
    """How many correct validation images a candidate may lose: ⌊``tolerance`` × ``validation_images``⌋,
    exact (the tolerance read as the decimal it prints as: 0.03 of 1,000 is 30, of 50 is 1)."""
    return exact_floor(tolerance, validation_images)


def strength(candidate: dict) -> tuple:
    """The rule's order of erasing strength: the starting lr first, then the β multiplier."""
    return candidate["lr"], candidate.get("beta_scale", 1.0)


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an exact count of validation images (an int), got {value!r}")
    return value


def choose(candidates: list, before_correct: int, tolerance: int) -> dict:
    """The rule (``RULE``): of ``candidates`` ({lr, beta_scale (absent for fine-tuning),
    validation_correct}), keep those with validation_correct ≥ ``before_correct`` − ``tolerance``
    (counts of correct validation images, compared as integers: :func:`tolerance_images` turns a
    fraction into one), then take the strongest: the largest lr, then the largest beta_scale.
    Returns {chosen, rule_met, kept, floor_correct}; with none kept, ``chosen`` has the most correct
    validation images (ties: the strongest) and ``rule_met`` is False."""
    if not candidates:
        raise ValueError("no candidate settings to choose from")
    floor = _count(before_correct, "before_correct") - _count(tolerance, "tolerance")
    kept = [c for c in candidates if _count(c["validation_correct"], "validation_correct") >= floor]
    if not kept:
        best = max(candidates, key=lambda c: (c["validation_correct"], *strength(c)))
        return {"chosen": best, "rule_met": False, "kept": 0, "floor_correct": floor}
    return {"chosen": max(kept, key=strength), "rule_met": True, "kept": len(kept), "floor_correct": floor}


def strongest_first(grid: list) -> list:
    """The (lr, beta_scale) settings of ``grid``, each once, in the rule's order: the largest lr
    first, then the largest β (None, fine-tuning's, counts as none)."""
    return sorted(dict.fromkeys(grid), key=lambda pair: (-pair[0], -(1.0 if pair[1] is None else pair[1])))


def regime(options: "TuneOptions", defender: dict, allowed: int) -> dict:
    """What a tuning's record says about how it chose: the regime's name, the tolerance on exact
    counts, the rule, the defender's share and the cost reduction."""
    return {"name": REGIME, "rule": RULE,
            "tolerance": {"fraction": options.tolerance, "images": allowed,
                          "validation_images": defender["validation_images"], "compared": "exact counts"},
            "defender_share": share_record(options.defense_ratio, defender),
            "search": options.search, "tuned_on": "this model's own validation set"}


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


def tune_defense(subject, defense, base_options, grid: list, before_correct: int, tolerance: int, data,
                 search: str = "ordered", progress: bool = True, **defense_args) -> dict:
    """Run ``defense(subject-with-a-copy-of-the-model, options, test=False, data=data,
    **defense_args)`` for the (lr, beta_scale) settings of ``grid``, strongest first
    (:func:`strongest_first`), and apply :func:`choose` with ``before_correct`` and ``tolerance``
    (counts of correct validation images). With ``search="ordered"`` it stops at the first candidate
    that keeps the model: the rule's choice, which no later (weaker) candidate can change. Returns
    {candidates (those run, in order), skipped (the settings not run), chosen, rule_met, kept,
    floor_correct, chosen_model} where ``chosen_model`` is the chosen candidate's erased model (for
    fine-tuning: the teacher of the others)."""
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
    order = strongest_first(grid)
    floor = before_correct - tolerance
    candidates, models = [], []
    for lr, beta_scale in tqdm(order, desc=f"tuning {defense.__name__}", disable=bar_disabled(progress),
                               dynamic_ncols=True):
        options = scaled(base_options, lr, beta_scale)
        trial = replace(subject, model=copy.deepcopy(subject.model))
        result = defense(trial, options=options, progress=False, test=False, data=data, **defense_args)
        candidates.append({**settings_of(options), "validation_correct": result["after"]["validation_correct"],
                           "validation_accuracy": result["after"]["validation_accuracy"],
                           "validation_history": [row["validation_accuracy"] for row in result["history"]],
                           "seconds": result["seconds"]})
        models.append(trial.model)
        if search == "ordered" and candidates[-1]["validation_correct"] >= floor:
            break
    decision = choose(candidates, before_correct, tolerance)
    chosen_model = models[candidates.index(decision["chosen"])]
    skipped = [settings_of(scaled(base_options, lr, beta)) for lr, beta in order[len(candidates):]]
    return {"candidates": candidates, "skipped": skipped, **decision, "chosen_model": chosen_model}
