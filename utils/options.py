"""The one argument parser every entry script shares, so the same flags name the same run.

Defaults and their sources are in the README ("Flags and where each default comes from");
``--help`` repeats the source.
"""
import argparse

import attacks
import datasets
import models
from regularizers import ESTIMATORS, KERNELS, REDUCTIONS
from training.loss import CE_REDUCTIONS
from utils.config import LAYER_CHOICES, RunConfig
from utils.errors import UserError, unknown_name

D = RunConfig()


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    data = parser.add_argument_group("data")
    data.add_argument("--data_name", default=D.data_name,
                      help=f"dataset: {', '.join(datasets.NAMES)}; digits is built in and needs no "
                           f"download (default: %(default)s, paper §3.4; the paper also uses celeba)")
    data.add_argument("--data_path", default=None,
                      help="directory holding the dataset's files in their usual layout "
                           "(not needed for digits)")
    data.add_argument("--download", action="store_true",
                      help="download CIFAR-10/CelebA/GTSRB with torchvision into --data_path "
                           "(default data/) if missing; never done unless asked")
    data.add_argument("--train_subset", type=int, default=None, metavar="N",
                      help="train on a seeded, class-stratified subset of N training images "
                           "(CPU-scale experiments; default: all)")

    model = parser.add_argument_group("model")
    model.add_argument("--model_name", default=D.model_name,
                       help=f"architecture: {', '.join(models.NAMES)} (paper App. A; default: %(default)s). "
                            f"preactresnet18 is App. A's P-18 (Conv-BN-ReLU stem, GAP+FC right after the "
                            f"last block); preactresnet18_he is He et al.'s form (conv stem, final BN-ReLU)")
    model.add_argument("--width", type=float, default=D.width,
                       help="channel-width multiplier for fast experiments (default: 1, the paper's)")

    attack = parser.add_argument_group("attack (paper §2.2, TABLE 1)")
    attack.add_argument("--attack_name", default=D.attack_name,
                        help=f"trigger: {', '.join(attacks.NAMES)} (default: %(default)s)")
    attack.add_argument("--target", type=int, default=D.target, help="target class t (paper: 0)")
    attack.add_argument("--poison_ratio", type=float, default=D.poison_ratio,
                        help="r = |U|/|D|, poisoned copies of non-target training images over the "
                             "training-set size, in (0, 1] (paper: 0.1)")
    attack.add_argument("--poison_mode", choices=("add", "replace"), default=D.poison_mode,
                        help="add: poisoned copies are added to the clean set, C = D ∪ U "
                             "(Algorithm 1, default); replace: they replace their originals")
    attack.add_argument("--patch_size", type=int, default=D.patch_size,
                        help="patched: side of the white bottom-right square (BadNets: 3)")
    attack.add_argument("--blend_alpha", type=float, default=D.blend_alpha,
                        help="blended: blend ratio α (prototype: 0.1)")
    attack.add_argument("--blend_pattern", default=D.blend_pattern,
                        help="blended: pattern image (default: the project's seeded noise pattern, "
                             "attacks/assets/blended_pattern.png)")
    attack.add_argument("--sig_delta", type=float, default=D.sig_delta,
                        help="sig: amplitude Δ in [0,1] pixel units (Barni et al.: 20/255)")
    attack.add_argument("--sig_freq", type=float, default=D.sig_freq, help="sig: frequency f (6)")
    attack.add_argument("--wanet_k", type=int, default=D.wanet_k, help="warped: control grid size k (4)")
    attack.add_argument("--wanet_s", type=float, default=D.wanet_s, help="warped: warp strength s (0.5)")
    attack.add_argument("--wanet_grid_rescale", type=float, default=D.wanet_grid_rescale,
                        help="warped: grid rescale (1)")
    attack.add_argument("--wanet_cross_ratio", type=float, default=D.wanet_cross_ratio,
                        help="warped: noise-mode samples per poisoned sample, kept at their true "
                             "labels (WaNet: 2; 0 disables noise mode)")

    reg = parser.add_argument_group("loss and ML-MMDR regulariser (paper Algorithm 1, Eq. 6)")
    reg.add_argument("--ce_reduction", choices=CE_REDUCTIONS, default=D.ce_reduction,
                     help="split: L1 + L2, the mean CE of the batch's benign samples plus the mean CE "
                          "of its poisoned samples (Algorithm 1 lines 9-10, Eq. 2 and 6; default); "
                          "pooled: one CE averaged over the whole batch (the authors' prototype). "
                          "WaNet's noise-mode samples keep their labels and count as benign")
    reg.add_argument("--mlmmdr_lamb", type=float, default=D.mlmmdr_lamb,
                     help="λ ≥ 0; 0 is regular backdoor training (RBT); the paper sweeps 0.1, 0.2, 0.3 (§5)")
    reg.add_argument("--mlmmdr_layer", default=D.mlmmdr_layer,
                     help="all = s1,s2,s3 (ML-MMDR); last = s3 only (SL-MMDR) (paper §5; default all)")
    reg.add_argument("--mlmmdr_reduce", default=D.mlmmdr_reduce,
                     help="combine levels by their mean (paper Eq. 6, default) or sum (the "
                          "authors' prototype code)")
    reg.add_argument("--kernel", default=D.kernel,
                     help=f"MMD kernel of TABLE 3: {', '.join(KERNELS)} (default gmk2, σ ∈ "
                          f"{{1/4, 1/2, 1, 2, 4}} × the adaptive bandwidth: the prototype's kernel; the "
                          f"paper names only 'a Gaussian mixture kernel', §4)")
    reg.add_argument("--mmd_estimator", default=D.mmd_estimator,
                     help="biased (V-statistic, the prototype; default) or unbiased")

    opt = parser.add_argument_group("optimisation (paper §3.4; unset = the dataset's default)")
    opt.add_argument("--epochs", type=int, default=None,
                     help="CIFAR-10 100, CelebA 40 (paper §3.4); GTSRB and fmnist reuse CIFAR-10's "
                          "100; digits 10 (ours)")
    opt.add_argument("--batch_size", type=int, default=None, help="256 (paper §3.4); digits: 64 (ours)")
    opt.add_argument("--lr", type=float, default=None, help="SGD learning rate (paper §3.4: 0.01)")
    opt.add_argument("--milestones", type=int, nargs="*", default=None,
                     help="epochs at which lr ÷ 10; default: the dataset's fractions of --epochs "
                          "(paper §3.4: CIFAR-10 50%% and 70%%, i.e. 50 70 of 100; CelebA 50%% and "
                          "75%%, i.e. 20 30 of 40; GTSRB, fmnist and digits as CIFAR-10)")
    opt.add_argument("--momentum", type=float, default=D.momentum, help="SGD momentum (paper §3.4: 0.9)")
    opt.add_argument("--weight_decay", type=float, default=D.weight_decay, help="SGD weight decay (paper §3.4: 5e-4)")
    opt.add_argument("--no_augment", dest="augment", action="store_false",
                     help="disable the augmentation: random crop 32 from the image zero-padded by 4, and a "
                          "horizontal flip (the paper names none; the common CIFAR recipe. The prototype "
                          "resizes to 36 and random-crops 32 instead, centre crop at test)")

    run = parser.add_argument_group("execution")
    run.add_argument("--seed", type=int, default=D.seed, help="drives every random choice (0; ours)")
    run.add_argument("--device", default=D.device, help="auto (CUDA when present), cpu or cuda")
    run.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    run.add_argument("--eval_batch_size", type=int, default=D.eval_batch_size)
    run.add_argument("--eval_every", type=int, default=D.eval_every,
                     help="measure BA/ASR every N epochs (and always after the last); 1 = every epoch")
    run.add_argument("--out_dir", default=D.out_dir, help="runs are written to OUT_DIR/<run name>/")
    run.add_argument("--run_name", default=None,
                     help="override the derived run name (data_model_attack[_mlmmdr_λ_layer]…)")
    run.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    return add_run_arguments(parser)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A validated, resolved RunConfig; any bad value raises UserError saying what to do."""
    config = RunConfig.from_dict(vars(args))
    validate(config)
    return config.resolve_defaults()


def validate(config: RunConfig) -> None:
    if config.data_name not in datasets.NAMES:
        raise unknown_name("dataset", config.data_name, datasets.NAMES)
    if config.model_name not in models.NAMES:
        raise unknown_name("model", config.model_name, models.NAMES)
    if config.attack_name not in attacks.NAMES:
        raise unknown_name("attack", config.attack_name, attacks.NAMES)
    if config.kernel not in KERNELS:
        raise unknown_name("kernel", config.kernel, KERNELS)
    if config.mlmmdr_layer not in LAYER_CHOICES:
        raise UserError(f"--mlmmdr_layer must be 'all' (ML-MMDR) or 'last' (SL-MMDR), "
                        f"got '{config.mlmmdr_layer}'")
    if config.mlmmdr_reduce not in REDUCTIONS:
        raise UserError(f"--mlmmdr_reduce must be one of {', '.join(REDUCTIONS)}, got '{config.mlmmdr_reduce}'")
    if config.mmd_estimator not in ESTIMATORS:
        raise UserError(f"--mmd_estimator must be one of {', '.join(ESTIMATORS)}, got '{config.mmd_estimator}'")
    if not config.mlmmdr_lamb >= 0:
        raise UserError(f"--mlmmdr_lamb must be ≥ 0 (0 = regular backdoor training), got {config.mlmmdr_lamb}")
    if not 0 < config.poison_ratio <= 1:
        raise UserError(f"--poison_ratio must be in (0, 1] (the paper uses 0.1), got {config.poison_ratio}")
    if not config.width > 0:
        raise UserError(f"--width must be positive, got {config.width}")
    for flag in ("epochs", "batch_size", "train_subset"):
        value = getattr(config, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be at least 1, got {value}")
    if config.lr is not None and not config.lr > 0:
        raise UserError(f"--lr must be positive, got {config.lr}")
    if config.eval_batch_size < 1 or config.eval_every < 1:
        raise UserError("--eval_batch_size and --eval_every must be at least 1")
    attacks.build_from_config(config.attack_name, config)  # the attack validates its own flags
