"""The resolved configuration of one run, and the run name derived from it.

Every field declared with ``param`` is a command-line flag of the same name (pipeline/flags.py);
the chosen attack's own parameters live in ``attack_params`` and their flags come from the
attack's dataclass. Defaults and their sources: the pages of docs/methods/ that docs/METHODS.md lists.
"""
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Optional

import attacks
from attacks.base import ALGORITHM_1, Regime
import datasets
import models
from regularizers import ESTIMATORS, KERNELS, REDUCTIONS, registry as regularizer_registry
from training import AMP_DTYPES, CE_REDUCTIONS, TrainSettings
from utils.errors import ParameterError, UserError, unknown_name
from utils.io import check_directory
from utils.params import check_params, default_of, param
from utils.seed import SEED_DOMAIN

LAYER_CHOICES = {"all": ("s1", "s2", "s3"), "last": ("s3",)}  # ML-MMDR, SL-MMDR
REGIME_FIELDS = tuple(ALGORITHM_1.settings())  # the flags a training regime sets (attacks.base.Regime)


@dataclass
class RunConfig:
    # data
    data_name: str = param("cifar10", f"dataset: {', '.join(datasets.NAMES)}; digits is built in and needs no "
                           f"download (default: cifar10, paper §3.4; the paper also uses celeba)")
    data_path: Optional[str] = param(None, "directory holding the dataset's files in their usual layout "
                                     "(not needed for digits)", type=str)
    download: bool = param(False, "download CIFAR-10/CelebA/GTSRB with torchvision into --data_path "
                           "(default data/) if missing; never done unless asked")
    train_subset: Optional[int] = param(None, "train on a seeded, class-stratified subset of N training images "
                                        "(CPU-scale experiments; default: all)", low=1, type=int)
    # model
    model_name: str = param("vgg11", f"architecture: {', '.join(models.NAMES)} (paper App. A; default: vgg11). "
                            f"preactresnet18 is App. A's P-18 (Conv-BN-ReLU stem, GAP+FC right after the last "
                            f"block); preactresnet18_he is He et al.'s form (conv stem, final BN-ReLU)")
    width: float = param(1.0, "channel-width multiplier for fast experiments (default: 1, the paper's; at most 16)",
                         **models.WIDTH_DOMAIN)
    # attack (paper §2.2, §3.2)
    attack_name: str = param("patched", f"trigger: {', '.join(attacks.NAMES)} (default: patched); each "
                             f"attack's own flags are listed under its name below")
    target: int = param(0, "target class t (paper: 0)", low=0)
    poison_ratio: float = param(0.1, "r = |U|/|D|, poisoned copies of non-target training images over the "
                                "training-set size (paper: 0.1)", low=0.0, high=1.0, low_open=True)
    poison_mode: Optional[str] = param(None, "add: poisoned copies are added to the clean set, C = D ∪ U (Algorithm 1); "
                                       "replace: they replace their originals. Default: the run's regime (see "
                                       "--ce_reduction): add for the paper's attacks and TaCT, replace for "
                                       "adaptive_blend and adaptive_patch", choices=("add", "replace"), type=str)
    cover_ratio: Optional[float] = param(None, "cover images over the training-set size: they carry the training "
                                         "trigger and keep their true labels (beyond the paper; default: the attack's "
                                         "own cover per poisoned image × the poisoned count: none for the paper's "
                                         "attacks, 1× for adaptive_blend and tact, 2× for adaptive_patch, as their "
                                         "reference rates 0.3%%/0.3%% and 0.3%%/0.6%%)", low=0.0, high=1.0, type=float)
    poison_batching: Optional[str] = param(None, "random: Algorithm 1's shuffled batches; gather (beyond the paper): "
                                           "each epoch's poisoned images dealt into a few batches, as many per batch "
                                           "as the paper's 10%% puts there, so the MMD term acts at low rates; auto: "
                                           "gather only when a random batch would hold fewer than 2 poisoned images "
                                           "on average. Default: the run's regime (see --ce_reduction): auto for the "
                                           "paper's attacks and for ML-MMDR, random for the adaptive attacks and "
                                           "TaCT alone", choices=("auto", "random", "gather"), type=str)
    attack_params: dict = field(default_factory=dict)  # the chosen attack's parameters, resolved
    # loss and regulariser (paper Algorithm 1, Eq. 6)
    ce_reduction: Optional[str] = param(None, "split: L1 + L2, the mean CE of the batch's benign samples plus the "
                                        "mean CE of its poisoned samples (Algorithm 1 lines 9-10, Eq. 2 and 6); pooled: "
                                        "one CE averaged over the whole batch (the authors' prototype, and how the "
                                        "adaptive attacks and TaCT were published). WaNet's noise-mode samples keep "
                                        "their labels and count as benign. Default: the run's regime. RBT trains as "
                                        "the attack was published: Algorithm 1 (split, auto batching, add) for the "
                                        "paper's attacks; pooled, random batches and in-place poisoning (replace) "
                                        "for adaptive_blend and adaptive_patch (the backdoor toolbox); pooled, "
                                        "random, add for TaCT (Tang et al.'s code). ML-MMDR and SL-MMDR train as "
                                        "Algorithm 1 on the attack's poisoning: the attacker controls training",
                                        choices=CE_REDUCTIONS, type=str)
    mlmmdr_lamb: float = param(0.0, "λ, the weight of the latent regulariser; 0 is regular backdoor training (RBT); "
                               "the paper sweeps 0.1, 0.2, 0.3 for MMD (§5). adv_embed's reference code sets 10 (its "
                               "config file 0.1; the paper's value could not be read)", low=0.0)
    regularizer: str = param("mmd", f"the latent regulariser λ weighs: {', '.join(regularizer_registry.NAMES)}. mmd "
                             f"is the paper's MMD² (ML-MMDR at --mlmmdr_layer all, SL-MMDR at last; default); "
                             f"adv_embed is Tan & Shokri's adversarial embedding [21] (a discriminator per level, "
                             f"trained against the model); wasserstein is the Wasserstein Backdoor's sliced "
                             f"Wasserstein term [22] as a classifier regulariser on the fixed trigger (not WB's "
                             f"trigger generator). Each one's own flags are listed under its name below",
                             choices=regularizer_registry.NAMES)
    regularizer_params: dict = field(default_factory=dict)  # the chosen regulariser's own options, resolved
    mlmmdr_layer: str = param("all", "the levels the regulariser acts on: all = s1,s2,s3 (ML-MMDR); last = s3 only "
                              "(SL-MMDR, and the layer of the reduction methods [21]-[23]) (paper §5)",
                              choices=tuple(LAYER_CHOICES))
    mlmmdr_reduce: str = param("mean", "combine levels by their mean (paper Eq. 6, default) or sum (the "
                               "authors' prototype code)", choices=REDUCTIONS)
    kernel: str = param("gmk2", f"MMD kernel of TABLE 3: {', '.join(KERNELS)} (default gmk2, σ ∈ {{1/4, 1/2, 1, "
                        f"2, 4}} × the adaptive bandwidth: the prototype's kernel; the paper names only 'a "
                        f"Gaussian mixture kernel', §4)")
    mmd_estimator: str = param("biased", "biased (V-statistic, the prototype; default) or unbiased",
                               choices=ESTIMATORS)
    # optimisation (paper §3.4; None = the dataset's default)
    epochs: Optional[int] = param(None, "CIFAR-10 100, CelebA 40 (paper §3.4); GTSRB and fmnist reuse "
                                  "CIFAR-10's 100; digits 10 (ours)", low=1, type=int)
    batch_size: Optional[int] = param(None, "256 (paper §3.4); digits: 64 (ours). Under torchrun the global batch, split "
                                      "across the ranks", low=1, type=int)
    lr: Optional[float] = param(None, "SGD learning rate (paper §3.4: 0.01)", low=0.0, low_open=True, type=float)
    milestones: Optional[list] = param(None, "epochs at which lr ÷ 10; default: the dataset's fractions of "
                                       "--epochs (paper §3.4: CIFAR-10 50%% and 70%%, i.e. 50 70 of 100; CelebA "
                                       "50%% and 75%%, i.e. 20 30 of 40; GTSRB, fmnist and digits as CIFAR-10)",
                                       low=1, type=int, nargs="*")
    momentum: float = param(0.9, "SGD momentum (paper §3.4: 0.9)", low=0.0)
    weight_decay: float = param(5e-4, "SGD weight decay (paper §3.4: 5e-4)", low=0.0)
    augment: bool = param(True, "disable the augmentation: random crop 32 from the image zero-padded by 4, and "
                          "a horizontal flip (the paper names none; the common CIFAR recipe. The prototype "
                          "resizes to 36 and random-crops 32 instead, centre crop at test)", flag="--no_augment")
    # execution
    seed: int = param(0, "drives every random choice (0; ours)", **SEED_DOMAIN)
    device: str = param("auto", "auto (CUDA when present), cpu or cuda")
    amp: bool = param(False, "bf16 autocast for the forward and backward passes (the MMD² and the cross-entropy "
                      "stay float32); meant for GPUs with bf16 (Ampere and later), allowed on the CPU")
    amp_dtype: str = param("bf16", "--amp's precision: bf16 (no loss scaling; GPUs from Ampere on, and the CPU) or "
                           "fp16 with a dynamic loss scale (torch's GradScaler, saved in resume.pt; for V100-era GPUs, "
                           "which have no fast bf16)", choices=tuple(AMP_DTYPES))
    channels_last: bool = param(False, "channels-last memory format for the model and its inputs, in training and "
                                "in every stage on the trained model (faster convolutions on tensor-core GPUs, and "
                                "on this project's CPU about 1.4x the images/s; float rounding differs from NCHW's)")
    compile: bool = param(False, "torch.compile the training network (the first steps compile: minutes; "
                          "also runs on the CPU)")
    deterministic: bool = param(False, "on CUDA: deterministic kernels and no cuDNN autotuning, so that a run and "
                                "its resumption give the same numbers on one GPU (slower; an op without a deterministic "
                                "kernel stops the run); without it CUDA runs repeat only up to floating-point noise. CPU "
                                "runs are deterministic either way")
    sync_bn: bool = param(False, "under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm; on "
                          "the CPU an all-reduce BatchNorm), as one process computes them; without it each "
                          "rank normalises its own shard")
    mmd_sync: str = param("global", "under torchrun: global = each level's features are all-gathered (with "
                          "gradients) so L3 is the MMD² of the global batch, exactly the single-process loss "
                          "(default); local = each rank's own MMD², averaged by DDP: cheaper, but another "
                          "estimator (fewer samples per group, biased differently)", choices=("global", "local"))
    eval_batch_size: int = param(512, "images per forward pass when measuring", low=1)
    eval_every: int = param(1, "measure BA/ASR every N epochs (and always after the last); 1 = every epoch", low=1)
    out_dir: str = param("runs", "runs are written to OUT_DIR/<run name>/")
    run_name: Optional[str] = param(None, "override the derived run name (data_model_attack[_mlmmdr_λ_all|last]…)",
                                    type=str)
    progress: bool = param(True, "no progress bars", flag="--no_progress")
    resume: bool = param(False, "continue an incomplete run from its last finished epoch (its resume.pt, written "
                         "after every epoch); on the same device and thread count it ends with exactly the "
                         "numbers of an uninterrupted run")
    overwrite: bool = param(False, "replace a run directory that holds a run with another configuration "
                            "(without it, training there is refused)")

    @property
    def levels(self) -> tuple:
        return LAYER_CHOICES[self.mlmmdr_layer]

    @property
    def method(self) -> str:
        """RBT (λ = 0), ML-MMDR (all levels) or SL-MMDR (last level only); another regulariser is
        named as ML-/SL- and its display name (ML-AdvEmbed, SL-SWD)."""
        if self.mlmmdr_lamb == 0:
            return "RBT"
        prefix = "ML" if self.mlmmdr_layer == "all" else "SL"
        if self.regularizer == "mmd":
            return f"{prefix}-MMDR"
        return f"{prefix}-{regularizer_registry.entry(self.regularizer).display}"

    def default_regime(self) -> Regime:
        """The training regime a run of this method on this attack takes by default: the attack's
        published one for RBT; for ML-MMDR and SL-MMDR, Algorithm 1's loss and batching on the
        attack's own poisoning (the attacker who adds the regulariser controls training, Algorithm 1;
        the data it plants stays the attack's)."""
        published = attacks.attack_class(self.attack_name).published_regime
        if self.mlmmdr_lamb == 0:
            return published
        return Regime(ALGORITHM_1.ce_reduction, ALGORITHM_1.poison_batching, published.poison_mode,
                      f"{ALGORITHM_1.source}, on the attack's poisoning ({published.poison_mode})")

    @property
    def regime(self) -> str:
        """How this resolved run trained, in one word for its records: ``published`` (RBT as the
        attack's authors trained it), ``algorithm1`` (ML-/SL-MMDR: Algorithm 1's loss and batching
        on the attack's poisoning; for the paper's attacks the two are the same) or ``custom`` (a
        flag changed the loss, the batching or the poisoning mode)."""
        if self.default_regime().settings() != {key: getattr(self, key) for key in REGIME_FIELDS}:
            return "custom"
        return "published" if self.mlmmdr_lamb == 0 else "algorithm1"

    def regime_source(self) -> str:
        """Where this run's regime comes from, in words (config.json's ``resolved``)."""
        if self.regime == "custom":
            changed = [f"{key} {getattr(self, key)}" for key, value in self.default_regime().settings().items()
                       if getattr(self, key) != value]
            return f"set by flags ({', '.join(changed)}) over {self.default_regime().source}"
        return self.default_regime().source

    def describe_regime(self) -> str:
        """The regime in a few words, for the line a command prints: 'published: pooled CE, random
        batches, replace'."""
        return (f"{self.regime}: {self.ce_reduction} CE, {self.poison_batching} batches, "
                f"{self.poison_mode} poisoned images")

    @property
    def group(self) -> str:
        """``{data}_{model}_{attack}``: the runs that share a group figure (RBT, SL- and ML-MMDR at each λ)."""
        return f"{self.data_name}_{self.model_name}_{self.attack_name}"

    def validate(self) -> "RunConfig":
        """Raise UserError/ParameterError (naming the field) for any value outside its domain."""
        for kind, value, known in (("dataset", self.data_name, datasets.NAMES), ("model", self.model_name, models.NAMES),
                                   ("attack", self.attack_name, attacks.NAMES), ("kernel", self.kernel, KERNELS)):
            if value not in known:
                raise unknown_name(kind, value, known)
        check_params(self)
        if self.run_name is not None and (not self.run_name.strip() or any(c in self.run_name for c in "/\\")
                                          or self.run_name in (".", "..")):
            raise ParameterError("run_name", f"must be a non-empty name without path separators, got "
                                             f"{self.run_name!r}; use --out_dir to choose the directory")
        attacks.build(self.attack_name, self.attack_params, self.seed)  # the attack checks its own parameters
        if self.regularizer not in regularizer_registry.NAMES:
            raise unknown_name("regularizer", self.regularizer, regularizer_registry.NAMES)
        regularizer_registry.check(self.regularizer, self.regularizer_params)
        if not str(self.out_dir).strip():
            raise ParameterError("out_dir", "is empty; give the directory runs are written to (default: runs)")
        self.out_dir = os.path.expanduser(self.out_dir)  # as --data_path is: '~/x' is the home's x, not a folder '~'
        check_directory(self.out_dir, "out_dir")
        return self

    def resolve_defaults(self) -> "RunConfig":
        """Fill unset schedule fields from the dataset's defaults (paper §3.4; the default milestones
        are the dataset's fractions of the resolved epochs), the attack's unset parameters from its
        dataclass, and the run name."""
        schedule = datasets.defaults(self.data_name)
        if self.epochs is None:
            self.epochs = schedule.epochs
        if self.batch_size is None:
            self.batch_size = schedule.batch_size
        if self.lr is None:
            self.lr = schedule.lr
        if self.milestones is None:
            self.milestones = schedule.milestones(self.epochs)
        self.attack_params = {**attacks.default_params(self.attack_name), **self.attack_params}
        if self.mlmmdr_lamb == 0:  # RBT has no regulariser: one run, whichever --regularizer was named
            self.regularizer, self.regularizer_params = "mmd", {}
        self.regularizer_params = {**regularizer_registry.default_params(self.regularizer), **self.regularizer_params}
        for key, value in self.default_regime().settings().items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if (self.regularizer == "adv_embed" and self.mlmmdr_lamb > 0
                and self.regularizer_params["adv_embed_warmup"] >= self.epochs):
            raise ParameterError("adv_embed_warmup", f"is {self.regularizer_params['adv_embed_warmup']}, which leaves "
                                                     f"none of the {self.epochs} epochs to the adversarial game; lower "
                                                     f"it below --epochs")
        if self.run_name is None:
            self.run_name = run_name(self)
        return self

    def train_settings(self) -> TrainSettings:
        """The training loop's settings of this resolved configuration, named field by field: a field
        renamed on either side fails here (tests/test_pipeline.py checks that each one arrives) instead
        of training silently with TrainSettings' default, such as λ = 0."""
        return TrainSettings(
            epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, milestones=tuple(self.milestones),
            momentum=self.momentum, weight_decay=self.weight_decay, target=self.target, mlmmdr_lamb=self.mlmmdr_lamb,
            regularizer=self.regularizer, regularizer_params=dict(self.regularizer_params), seed=self.seed,
            levels=self.levels, kernel=self.kernel, mlmmdr_reduce=self.mlmmdr_reduce, mmd_estimator=self.mmd_estimator,
            ce_reduction=self.ce_reduction, amp=self.amp, amp_dtype=self.amp_dtype, sync_bn=self.sync_bn, mmd_sync=self.mmd_sync,
            channels_last=self.channels_last, compile=self.compile, eval_batch_size=self.eval_batch_size,
            eval_every=self.eval_every, progress=self.progress)

    def identity(self) -> dict:
        """The fields that decide what the trained model is: all but where and how it is run and shown."""
        return {key: value for key, value in self.to_dict().items()
                if key not in NOT_IDENTITY and not self._unrecorded(key)}

    def _unrecorded(self, key: str) -> bool:
        """Whether ``key`` is a field added after runs were recorded, at the value those runs had
        (``ADDED_LATER``), or one that does not act (the AMP dtype without --amp): left out of the
        identity, so that runs recorded before it keep their hash and do not go stale."""
        return key in ADDED_LATER and (getattr(self, key) == ADDED_LATER[key] or (key == "amp_dtype" and not self.amp))

    def config_hash(self) -> str:
        """A hash of :meth:`identity`, recorded in config.json and in every result of the run."""
        return digest(self.identity())

    def header(self, options=None) -> dict:
        """What every result file of the run starts with, so it describes itself; ``inputs_hash``
        names the configuration and stage options it was computed from (the scheduler reruns a
        stage whose recorded inputs differ)."""
        return {"run_name": self.run_name, "method": self.method, "data_name": self.data_name,
                "model_name": self.model_name, "attack_name": self.attack_name, "target": self.target,
                "mlmmdr_lamb": self.mlmmdr_lamb, "mlmmdr_layer": self.mlmmdr_layer, "regularizer": self.regularizer,
                "seed": self.seed,
                "regime": self.regime, **{key: getattr(self, key) for key in REGIME_FIELDS},
                "config_hash": self.config_hash(), "inputs_hash": inputs_hash(self, options)}

    def to_dict(self) -> dict:
        return asdict(self)

    def with_changes(self, **changes) -> "RunConfig":
        """A resolved copy of this *unresolved* base with ``changes`` applied, the run name derived
        again (unless given). The schedule is resolved from the copy's dataset, so call it on a base
        whose unset fields are still None (as the reproduction grid does)."""
        if changes.get("attack_name", self.attack_name) != self.attack_name and "attack_params" not in changes:
            changes["attack_params"] = {}  # another attack: its own defaults
        return replace(self, run_name=changes.pop("run_name", None), **changes).resolve_defaults()

    @classmethod
    def from_dict(cls, values: dict, source: str = "a recorded configuration") -> "RunConfig":
        """From config.json (or a flat dict): unknown keys are ignored; a file written before
        attack parameters were nested keeps them flat, and they are gathered here. A value of the
        wrong type (``attack_params: null``, a number written as text) is a UserError naming
        ``source``: a file that parses but is damaged inside."""
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key in known and not _fits(value, known[key]):
                raise UserError(f"{source} holds {key} = {value!r}, which is not what a run records; restore the "
                                f"file, or retrain the run")
        config = cls(**{key: value for key, value in values.items() if key in known})
        if "attack_params" not in values and config.attack_name in attacks.NAMES:
            config.attack_params = {key: values[key] for key in attacks.param_names(config.attack_name)
                                    if key in values}
        return config


def _fits(value, f) -> bool:
    """Whether ``value`` has the type of field ``f``'s default (any value where the default is None
    and no type is declared; None only where the default is None)."""
    default = default_of(f)
    kind = f.metadata.get("type") or (type(default) if default is not None else None)
    if value is None:
        return default is None
    if f.metadata.get("nargs") or isinstance(default, (list, tuple)):  # a list of values (its type: each one's)
        return isinstance(value, (list, tuple))
    if kind is None:
        return True
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or float(value).is_integer())
    return isinstance(value, kind)


# Where and how a run is executed and shown, not what it is: excluded from its identity. (The
# device is excluded too: the same run on another device is the same experiment, and its numbers
# may differ only as floating point does.)
# {field: the value every run recorded before the field existed}: see RunConfig._unrecorded
ADDED_LATER = {"amp_dtype": "bf16", "regularizer": "mmd", "regularizer_params": {}}
NOT_IDENTITY = {"data_path", "download", "device", "eval_batch_size", "eval_every", "out_dir", "run_name",
                "progress", "overwrite", "resume", "channels_last", "compile", "deterministic"}


def digest(values) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def inputs_hash(config: RunConfig, options=None) -> str:
    """The identity of a stage's inputs: the run's configuration and the stage's options (their
    ``identity()`` where they define one, which keeps renamed fields under their first names)."""
    identity = None if options is None else options.identity() if hasattr(options, "identity") else asdict(options)
    return digest({"config": config.config_hash(), "options": identity})


def _number(value: float) -> str:
    return f"{value:g}"


def run_name(config: RunConfig) -> str:
    """``{data}_{model}_{attack}[_mlmmdr_{λ}_{all|last}]`` plus a suffix per non-default choice.

    The base follows the authors' README; the suffixes make sure that runs differing in seed,
    ratio, target, width or any regulariser/attack option never overwrite each other silently. The
    loss, batching and poisoning mode are named where they differ from Algorithm 1's (split, auto,
    add), so a run trained as an adaptive attack was published says so (``_pooled…_replace_random``).
    """
    name = config.group
    defaults = RunConfig()
    if config.mlmmdr_lamb > 0:
        tag = "mlmmdr" if config.regularizer == "mmd" else config.regularizer
        name += f"_{tag}_{_number(config.mlmmdr_lamb)}_{config.mlmmdr_layer}"
        for key in ("kernel", "mlmmdr_reduce", "mmd_estimator"):
            if getattr(config, key) != getattr(defaults, key) and (config.regularizer == "mmd" or key == "mlmmdr_reduce"):
                name += f"_{getattr(config, key)}"
        name += _changed_digest("reg", regularizer_registry.default_params(config.regularizer),
                                config.regularizer_params)
    if config.ce_reduction != ALGORITHM_1.ce_reduction:
        name += f"_{config.ce_reduction}"
    for key, tag in (("width", "w"), ("train_subset", "n"), ("poison_ratio", "r"), ("cover_ratio", "c"),
                     ("target", "t"), ("poison_mode", ""), ("poison_batching", ""), ("seed", "seed")):
        value = getattr(config, key)
        if value != (getattr(ALGORITHM_1, key) if key in REGIME_FIELDS else getattr(defaults, key)):
            name += f"_{tag}{_number(value) if isinstance(value, float) else value}"
    return name + _changed_digest("trig", attacks.default_params(config.attack_name), config.attack_params)


def _changed_digest(tag: str, defaults: dict, params: dict) -> str:
    """``_{tag}{6 hex}`` naming the parameters that differ from their defaults; '' when none does."""
    changed = [key for key in defaults if params.get(key, defaults[key]) != defaults[key]]
    if not changed:
        return ""
    digest = hashlib.sha1(repr([(key, params[key]) for key in changed]).encode()).hexdigest()
    return f"_{tag}{digest[:6]}"
