"""experiments/reproduce.py's options, declared once: each field is a flag of the same name
(pipeline.flags.add_flags), its domain is checked as the options are built (utils.params), and
``--help`` prints its help. The grid's own defaults (its attacks, λ values, seeds and studies) are
read from experiments.grid.Grid, where they are declared; a profile (``PROFILES``) is a set of
other defaults, and a flag given explicitly wins over it.
"""
from dataclasses import dataclass
from typing import Optional

from experiments.grid import GRID_DEFAULTS as GRID
from models import WIDTH_DOMAIN
from utils.params import check_params, param
from utils.seed import SEED_DOMAIN

# {profile: hours of wall time on BUDGET_CORES CPU cores it is held to (issue 45: the full grid 12 h, the quick
# profile 1 h)}: the report measures the grid against it, and --plan estimates the stages left against it
BUDGET_HOURS = {"full": 12, "quick": 1}
BUDGET_CORES = 2

# {profile: {flag: value}}: the defaults each profile changes ("full" is the flags' own defaults)
PROFILES = {
    "full": {},
    "quick": {"seeds": [0], "kernel_seeds": [0], "lambdas": [0.3], "attacks": ["patched", "blended"], "second_attacks": ["patched"],
              "kernels": ["gmk2", "gk1", "lk"], "no_pooled": True, "epochs": 6, "adaptive_rates": ["0.1"],
              "regularizer_attacks": ["patched"], "regularizer_seeds": [0],
              "eval_flags": "--pool_sizes 100",
              "erasing_seeds": [0], "reference_model": "none", "nc_flags": "--nc_epochs 10",
              "tune_flags": "--tune_lrs 0.01 --tune_beta_scales 0.25 --tune_finetune_lrs 0.01",
              "out_dir": "runs/quick", "figure_dir": "runs/quick/figures", "report": "runs/quick/REPRODUCTION.md"},
}


def describe_profile(name: str) -> str:
    """The flags a profile changes, as a command line would give them (its --profile help says so)."""
    return ", ".join(f"--{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}"
                     for flag, value in PROFILES[name].items())


def grid_list(name: str) -> list:
    """Grid's default of the sequence ``name``, as the list a flag of several values holds."""
    return list(GRID[name])


@dataclass
class ReproduceOptions:
    """The reproduction's flags, one field each, in the order --help lists them. The grid
    (experiments/grid.py) turns them into every run's configuration, so a value refused here is
    refused before any run starts."""

    data_name: str = param("fmnist", "dataset of every run (main.py's --data_name; default: fmnist, Fashion-MNIST)")
    data_path: str = param("/usr/share/datasets/fashion-mnist", "directory holding the dataset's files (not read "
                           "for digits, which is built in)")
    model_name: str = param("vgg11", "the base architecture: every study's runs but the second architecture's and "
                            "the erasing reference arm's")
    width: float = param(0.25, "its channel-width multiplier (the paper: 1)", **WIDTH_DOMAIN)
    train_subset: int = param(10000, "train on a seeded, class-stratified subset of N training images (0: the whole "
                              "training set)", low=0)
    epochs: int = param(12, "training epochs of every run (the paper: 100)", low=1)
    profile: str = param("full", f"full: the committed REPRODUCTION.md's grid (its budget: {BUDGET_HOURS['full']:g} "
                         f"hours on {BUDGET_CORES} CPU cores; --plan estimates it, the report states what it took); quick: every claim on "
                         f"one seed in about {BUDGET_HOURS['quick']:g} hour (" + describe_profile("quick")
                         + "). A flag given explicitly overrides the profile's value", choices=tuple(PROFILES))
    seed: int = param(0, "the base seed: the λ sweep's smaller λ values and the loss study run on it alone",
                      **SEED_DOMAIN)
    milestones: Optional[list] = param(None, "main.py's --milestones (lr ÷10); default: the dataset's fractions of "
                                       "--epochs (fmnist: 50%% and 70%%, i.e. 6 8 of 12, paper §3.4 scaled). Runs are "
                                       "not renamed by it: use another --out_dir", low=1, nargs="*", type=int)
    channels_last: bool = param(True, "train and measure the runs in NCHW memory format instead of channels-last (the "
                                "default: on this project's 2-core CPU it trains VGG-11 and PreActResNet-18 about 1.4 "
                                "times as fast, python benchmarks/train_step.py --paths plain channels_last). "
                                "Training's float rounding differs from the first step on, so the two train different "
                                "models of the same experiment; the memory format is not part of a run's identity, a "
                                "run keeps the format it was trained in, and the report counts the runs trained each "
                                "way")
    eval_every: int = param(4, "main.py's --eval_every: BA/ASR every N epochs during training (final always)", low=1)
    lambdas: list = param(grid_list("lambdas"), "λ values of the λ sweep; the claims and the other studies use the "
                          "largest", low=0.0, low_open=True, nargs="+")
    attacks: list = param(grid_list("attacks"), "attacks of the λ sweep (TABLE 1's)", nargs="+")
    second_model: str = param(GRID["second_model"], "the second architecture (the paper's headline PreActResNet-18); "
                              "none: skip")
    second_width: float = param(GRID["second_width"], "its width: 0.125 costs about what VGG-11 costs at 0.25 (17.7 "
                                "vs 19.8 MFLOPs a 32×32 image)", **WIDTH_DOMAIN)
    second_attacks: list = param(grid_list("second_attacks"), "attacks of the second architecture's runs", nargs="+")
    focus_attack: str = param(GRID["focus_attack"], "the attack of the kernel, seed and loss studies (the paper's "
                              "Fig. 11 uses patched)")
    kernels: list = param(grid_list("kernels"), "TABLE 3 kernels of the kernel study (none: skip)", nargs="*")
    seeds: list = param(grid_list("seeds"), "the λ sweep's, second architecture's and adaptive study's seeds (with "
                        "--seed): every claim but C6, C7, C12 and C13 is judged on each (issue 45: five)", nargs="*",
                        **SEED_DOMAIN)
    kernel_seeds: list = param(grid_list("kernel_seeds"), "the kernel study's seeds (with --seed; C6 is judged on "
                               "them: issue 45 lets C1–C6 stay on three)", nargs="*", **SEED_DOMAIN)
    adaptive_attacks: list = param(grid_list("adaptive_attacks"), "C10: attacks built for latent inseparability, "
                                   "trained under RBT and compared with ML-MMDR on the λ sweep's attacks (none: skip)",
                                   nargs="*")
    stacked_attacks: list = param(grid_list("stacked_attacks"), "C11: adaptive attacks also trained with ML-MMDR at "
                                  "the largest λ", nargs="*")
    adaptive_rates: list = param([str(rate) for rate in GRID["adaptive_rates"]], "poisoning rates of the adaptive "
                                 "study: fractions, or 'reference' for each attack's own (0.3%%)", nargs="+")
    regularizer_attacks: list = param(grid_list("regularizer_attacks"), "C12, C13: attacks of the regularizers study "
                                      "(each reduction method at the last level and at every level; none: skip)",
                                      nargs="*")
    regularizer_seeds: list = param(grid_list("regularizer_seeds"), "seeds of the regularizers study (issue 45: "
                                    "five)", nargs="*", **SEED_DOMAIN)
    no_pooled: bool = param(False, "skip the study of the prototype's pooled loss against Algorithm 1's split loss")
    defended_attacks: list = param(grid_list("defended_attacks"), "attacks whose λ-sweep and second-model runs also "
                                   "get Neural Cleanse and pruning", nargs="*")
    nc_flags: str = param("--nc_epochs 300", "defend.py's Neural Cleanse flags (--clean_samples, --nc_*); default: the "
                          "reference's budget (1000 clean images, epochs of 31 mini-batches of 32, early stopping) but "
                          "at most 300 epochs instead of 1000: early stopping ended most runs of the v2 grid by epoch "
                          "250, and a run that never stops costs 45 minutes at 1000 on a CPU ('' for the reference's)")
    erased_attacks: list = param(grid_list("erased_attacks"), "attacks whose RBT and largest-λ ML-MMDR runs also get "
                                 "fine-tuning, NAD and ARGD (none: skip erasing)", nargs="*")
    erasing_seeds: list = param(grid_list("erasing_seeds"), "seeds of the erasing studies' runs (training and the "
                                "defender's sample; C7, issue 45: five)", nargs="*", **SEED_DOMAIN)
    reference_model: str = param(GRID["reference_model"], "the erasing defenses' own model family, trained at "
                                 "--reference_lr and erased with the references' settings (none: skip that arm)")
    reference_lr: float = param(GRID["reference_lr"], "its training learning rate (NAD's and ARGD's code: 0.1)",
                                low=0.0, low_open=True)
    erase_share_of: str = param("attacker", "what the erasing defenses' and the tuning's --defense_ratio (5%) is a "
                                "share of: 'attacker', the attacker's training set (NAD/ARGD: 500 images of a "
                                "10,000-image subset), or 'whole', the whole training set (3,000 of Fashion-MNIST's "
                                "60,000: the sensitivity arm; give it its own --out_dir)",
                                choices=("attacker", "whole"))
    tune_flags: str = param("", "defend.py's --tune_* flags: the grid of the tuning on the base model's runs, e.g. "
                            "'--tune_lrs 0.01 0.003'")
    erase_flags: str = param("--defense_eval_subset 2000", "defend.py's flags of fine-tuning, NAD and ARGD "
                             "(--defense_ratio, --teacher_epochs, --ft_*, --nad_*, --argd_*), e.g. '--defense_ratio "
                             "0.1 --nad_lr_scale 0.1'. Default: each epoch's BA/ASR on a seeded 2,000-image test "
                             "subset (before and after on the whole test set), which makes an erasing about 2.5× "
                             "faster on a CPU")
    eval_flags: str = param("", "evaluate.py's protocol flags (--num_samples, --pool_sizes, …)")
    report_only: bool = param(False, "run nothing: write the report from the stages finished so far (it says how "
                              "many are missing), e.g. while the grid runs in another process; refused when --out_dir "
                              "holds none, or when --report records more (see --force)")
    plan: bool = param(False, "run nothing: print the grid's runs and stages per study and per stage, how many are "
                       "still to run, and their hours estimated from the stage times --out_dir has measured "
                       "(experiments/plan.py), against the profile's time budget")
    no_benchmark: bool = param(False, "skip timing a full-width training step of each architecture (the report's "
                               "GPU-hours)")
    out_dir: str = param("results/reproduce", "the grid's runs. The default is the results archive: its JSON records "
                         "are committed (checkpoints are not: a run missing a stage retrains first, keeping its "
                         "records when the model is the same bit for bit), so --report_only rewrites the report "
                         "without training")
    figure_dir: str = param("figures/reproduce", "where the figures are drawn (the report links them)")
    report: str = param("REPRODUCTION.md", "the report written")
    force: bool = param(False, "write --report even over a report that records more finished stages (or a file "
                        "this command did not write)")

    def __post_init__(self):
        check_params(self)
