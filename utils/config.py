"""The resolved configuration of one run, and the run name derived from it (README, Outputs)."""
import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Optional

import datasets
from attacks.blended import DEFAULT_PATTERN

LAYER_CHOICES = {"all": ("s1", "s2", "s3"), "last": ("s3",)}  # ML-MMDR, SL-MMDR


@dataclass
class RunConfig:
    """Every field is a command-line flag of the same name (see ``utils.options``)."""

    # data
    data_name: str = "cifar10"
    data_path: Optional[str] = None
    download: bool = False
    train_subset: Optional[int] = None
    # model
    model_name: str = "vgg11"
    width: float = 1.0
    # attack (paper §2.2, §3.2; trigger parameters: README, "Flags and where each default comes from")
    attack_name: str = "patched"
    target: int = 0
    poison_ratio: float = 0.1
    poison_mode: str = "add"
    patch_size: int = 3
    blend_alpha: float = 0.1
    blend_pattern: str = str(DEFAULT_PATTERN)
    sig_delta: float = 20 / 255
    sig_freq: float = 6.0
    wanet_k: int = 4
    wanet_s: float = 0.5
    wanet_grid_rescale: float = 1.0
    wanet_cross_ratio: float = 2.0
    # regulariser (paper Eq. 6, Algorithm 1)
    mlmmdr_lamb: float = 0.0
    mlmmdr_layer: str = "all"
    mlmmdr_reduce: str = "mean"
    kernel: str = "gmk2"
    mmd_estimator: str = "biased"
    ce_reduction: str = "split"  # Algorithm 1: L1 + L2; "pooled" = the prototype's one batch mean
    # optimisation (paper §3.4; None = the dataset's default)
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    milestones: Optional[list] = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    # execution
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    eval_batch_size: int = 512
    eval_every: int = 1
    out_dir: str = "runs"
    run_name: Optional[str] = None
    progress: bool = True

    @property
    def levels(self) -> tuple:
        return LAYER_CHOICES[self.mlmmdr_layer]

    @property
    def method(self) -> str:
        """RBT (λ = 0), ML-MMDR (all levels) or SL-MMDR (last level only)."""
        if self.mlmmdr_lamb == 0:
            return "RBT"
        return "ML-MMDR" if self.mlmmdr_layer == "all" else "SL-MMDR"

    def resolve_defaults(self) -> "RunConfig":
        """Fill unset schedule fields from the dataset's defaults (paper §3.4); the default
        milestones are the dataset's fractions of the resolved epochs."""
        schedule = datasets.defaults(self.data_name)
        if self.epochs is None:
            self.epochs = schedule.epochs
        if self.batch_size is None:
            self.batch_size = schedule.batch_size
        if self.lr is None:
            self.lr = schedule.lr
        if self.milestones is None:
            self.milestones = schedule.milestones(self.epochs)
        if self.run_name is None:
            self.run_name = run_name(self)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})


def _number(value: float) -> str:
    return f"{value:g}"


def run_name(config: RunConfig) -> str:
    """``{data}_{model}_{attack}[_mlmmdr_{λ}_{all|last}]`` plus a suffix per non-default choice.

    The base follows the authors' README; the suffixes make sure that runs differing in seed,
    ratio, target, width or any regulariser/attack option never overwrite each other silently.
    """
    name = f"{config.data_name}_{config.model_name}_{config.attack_name}"
    if config.mlmmdr_lamb > 0:
        name += f"_mlmmdr_{_number(config.mlmmdr_lamb)}_{config.mlmmdr_layer}"
        for key, default in (("kernel", "gmk2"), ("mlmmdr_reduce", "mean"), ("mmd_estimator", "biased")):
            if getattr(config, key) != default:
                name += f"_{getattr(config, key)}"
    defaults = RunConfig()
    if config.ce_reduction != defaults.ce_reduction:
        name += f"_{config.ce_reduction}"
    for key, tag in (("width", "w"), ("train_subset", "n"), ("poison_ratio", "r"), ("target", "t"),
                     ("poison_mode", ""), ("seed", "seed")):
        value = getattr(config, key)
        if value != getattr(defaults, key):
            name += f"_{tag}{_number(value) if isinstance(value, float) else value}"
    attack_defaults = {"patched": ("patch_size",), "blended": ("blend_alpha", "blend_pattern"),
                       "sig": ("sig_delta", "sig_freq"),
                       "warped": ("wanet_k", "wanet_s", "wanet_grid_rescale", "wanet_cross_ratio")}
    changed = [key for key in attack_defaults.get(config.attack_name, ())
               if getattr(config, key) != getattr(defaults, key)]
    if changed:
        digest = hashlib.sha1(repr([(k, getattr(config, k)) for k in changed]).encode()).hexdigest()
        name += f"_trig{digest[:6]}"
    return name
