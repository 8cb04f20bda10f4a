"""The reproduction grid: which runs answer which of the paper's questions, and the stages each gets.

Studies (each a list of runs; a run shared by two studies is trained once), each on ``seeds`` (issue
45: five) but the kernel study (``kernel_seeds``, three), erasing (``erasing_seeds``) and the
regularizers (``regularizer_seeds``); a claim is judged on the seeds its studies share. Only the λ
sweep's smaller λ values and the loss study stay on the base seed:

- ``lambda``: every attack × {RBT; SL-MMDR and ML-MMDR at each λ} on the base model (paper Fig. 3,
  TABLE 2, Figs. 5–7), the largest λ on every seed;
- ``model``: the second architecture (PreActResNet-18, the paper's headline model) on a few attacks
  × {RBT, SL-MMDR, ML-MMDR at the largest λ}, every seed;
- ``kernel``: ML-MMDR at the largest λ on the focus attack with each TABLE 3 kernel (§6.3, Fig. 11),
  on ``kernel_seeds``;
- ``loss``: that ML-MMDR run with Algorithm 1's split loss and with the prototype's pooled loss;
- ``adaptive`` (beyond the paper: C10, C11): the attacks built for latent inseparability
  (Adaptive-Blend, Adaptive-Patch, TaCT) under RBT, trained as their authors published them, and
  the stacked ones also under ML-MMDR, at the grid's poisoning rate and at each attack's reference
  rate, every seed; and ML-MMDR on the attacks they reshape (Patched, Blended) at those reference
  rates, so that attacks are only ever compared at one rate;
- ``regularizers`` (beyond the paper: C12, C13): the reduction methods the paper argues against,
  [21]'s adversarial embedding and [22]'s sliced Wasserstein term (``regularizer_weights``), and
  the paper's MMD², each at the last level and at every level, with RBT beside, on
  ``regularizer_attacks`` and every seed of ``regularizer_seeds`` (issue 45: five).

Stages: train and evaluate for all; Neural Cleanse (at the reference's budget: up to an hour a run
on a CPU) and pruning on the defended attacks' RBT and ML-MMDR runs of the ``lambda`` and ``model``
studies; fine-tuning, NAD and ARGD (beyond the paper: does ML-MMDR resist erasing?) on the RBT and
largest-λ ML-MMDR runs of each erased attack and erasing seed, in two arms (``erase_reference``,
``erase_tuned``; in the tuned arm each run is tuned on its own validation set first).

It only says *what* to run; pipeline/schedule.py runs each run's missing stages, so an
interrupted reproduction resumes where it stopped.
"""
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Optional

from attacks import PAPER_ATTACKS, attack_class
from defenses import ERASERS, PAPER_DETECTORS
from experiments.adaptive import BASE_ATTACK
from pipeline.config import RunConfig
from pipeline.rundir import RunDir, rewrite
from pipeline.schedule import Job
from pipeline.stages import get
from regularizers.kernels import KERNELS
from utils.errors import UserError

ATTACKS = PAPER_ATTACKS
PAPER_STUDIES = ("lambda", "model", "kernel", "loss")
STUDIES = PAPER_STUDIES + ("adaptive", "regularizers", "erase_reference", "erase_tuned")
REFERENCE_RATE = "reference"   # an adaptive study rate: each attack's own (attacks' ``reference_rates``)


@dataclass
class Grid:
    base: RunConfig                 # what every run shares (data, model, width, epochs, seed, out_dir)
    attacks: tuple = ATTACKS
    lambdas: tuple = (0.1, 0.2, 0.3)
    defended_attacks: tuple = ("patched",)
    erased_attacks: tuple = ("patched",)
    erasing_seeds: tuple = (0, 1, 2, 3, 4)   # C7 (issue 45: five)
    erase_share_of: Optional[str] = None   # the erasing defenses' and tuning's --defense_share_of in both arms:
    # "attacker" (5% of the attacker's training set, the references'), "whole" (the 3,000-image sensitivity arm:
    # run it in its own out_dir), None: the stage options' own (default "attacker")
    reference_model: Optional[str] = "wrn16_1"   # the erasing defenses' own model family (None: no such arm)
    reference_lr: float = 0.1                    # … and the learning rate it is trained at (NAD's and ARGD's code)
    second_model: Optional[str] = "preactresnet18"
    second_width: float = 0.125     # PreActResNet-18 at 1/8 width costs about VGG-11 at 1/4 (FLOPs)
    second_attacks: tuple = ("patched", "blended")
    focus_attack: str = "patched"   # the kernel, seed and loss studies' attack (Fig. 11's)
    kernels: tuple = tuple(KERNELS)
    # every claim's runs on each (issue 45: the studies behind C7–C13 and C8 on five seeds; C1–C5, read from
    # the same λ sweep, are judged on them too); the smaller λ and the loss study on base.seed alone
    seeds: tuple = (0, 1, 2, 3, 4)
    kernel_seeds: tuple = (0, 1, 2)  # the kernel study's (C6: issue 45 lets C1–C6 stay on three)
    compare_pooled: bool = True
    adaptive_attacks: tuple = ("adaptive_blend", "adaptive_patch", "tact")   # C10, under RBT
    stacked_attacks: tuple = ("adaptive_blend", "adaptive_patch")            # C11, also under ML-MMDR
    adaptive_rates: tuple = (0.1, REFERENCE_RATE)  # poisoning rates of the adaptive study
    # C12, C13: each reduction method at its weight, at the last level and at every level. MMD² at the grid's λ
    # joins them. SWD at 0.33: at 1 SL-SWD loses the task on the digits quick start (its weight all on s3,
    # docs/methods/reduction-methods.md); adversarial embedding at trojanzoo's configured 0.1 (its code's 10
    # collapses the model). The same weight at both levels, as the paper compares SL- and ML-MMDR.
    regularizer_weights: tuple = (("adv_embed", 0.1), ("wasserstein", 0.33))
    regularizer_attacks: tuple = ("patched", "blended")
    regularizer_seeds: tuple = (0, 1, 2, 3, 4)
    stage_options: dict = field(default_factory=dict)  # {stage name: options} where not the defaults

    @property
    def lamb(self) -> float:
        """The λ at which the claims are judged and the other studies are run: the largest."""
        return max(self.lambdas)

    @property
    def claim_seeds(self) -> tuple:
        """The seeds every claim is judged on: the base seed first."""
        return tuple(dict.fromkeys((self.base.seed, *self.seeds)))

    @property
    def kernel_claim_seeds(self) -> tuple:
        """The kernel study's seeds: ``kernel_seeds`` among the claims' seeds (C6 compares the kernels
        with the λ sweep's RBT runs, so a kernel run on a seed the sweep lacks would be read by no claim)."""
        return tuple(seed for seed in self.claim_seeds if seed == self.base.seed or seed in self.kernel_seeds)

    def _methods(self, attacks, lambdas, **shared) -> list:
        """For each seed and attack: RBT first, then SL-MMDR and ML-MMDR at each λ (off the base
        seed, at the largest λ alone)."""
        out = []
        for seed in self.claim_seeds:
            for attack in attacks:
                out.append(self.base.with_changes(attack_name=attack, mlmmdr_lamb=0.0, seed=seed, **shared))
                out += [self.base.with_changes(attack_name=attack, mlmmdr_lamb=lamb, mlmmdr_layer=layer, seed=seed,
                                               **shared)
                        for layer in ("last", "all") for lamb in (lambdas if seed == self.base.seed else (self.lamb,))]
        return out

    def _adaptive(self) -> list:
        """C10 and C11: each adaptive attack under RBT, each stacked one also under ML-MMDR at the
        largest λ, at every rate of ``adaptive_rates`` and seed."""
        out = []
        for seed in self.claim_seeds:
            for attack in dict.fromkeys(self.adaptive_attacks + self.stacked_attacks):
                lambdas = ((0.0,) if attack in self.adaptive_attacks else ()) + (
                    (self.lamb,) if attack in self.stacked_attacks else ())
                for rate in self.adaptive_rates:
                    out += [self.base.with_changes(attack_name=attack, seed=seed, poison_ratio=self._rate(attack, rate),
                                                   mlmmdr_lamb=lamb, mlmmdr_layer="all") for lamb in lambdas]
            # every comparison between attacks is at one poisoning rate: ML-MMDR on the attacks the
            # adaptive ones reshape also runs at their reference rates (the λ sweep holds the grid's)
            for attack, reshaped in BASE_ATTACK.items():
                if attack not in self.adaptive_attacks + self.stacked_attacks:
                    continue
                out += [self.base.with_changes(attack_name=reshaped, seed=seed, poison_ratio=self._rate(attack, rate),
                                               mlmmdr_lamb=self.lamb, mlmmdr_layer="all")
                        for rate in self.adaptive_rates if rate == REFERENCE_RATE]
        return list({RunDir.of(config).path: config for config in out}.values())

    def _regularizers(self) -> list:
        """C12 and C13: RBT, then each regulariser of ``regularizer_weights`` and MMD² at the grid's
        λ, at the last level and at every level, on each attack and seed of the study."""
        weights = (("mmd", self.lamb),) + tuple(self.regularizer_weights)
        return [self.base.with_changes(attack_name=attack, seed=seed, mlmmdr_lamb=lamb, mlmmdr_layer=layer,
                                       regularizer=regularizer, regularizer_params=self._regularizer_params(regularizer))
                for seed in self.regularizer_seeds for attack in self.regularizer_attacks
                for regularizer, lamb in ((("mmd", 0.0),) + weights)
                for layer in (("all",) if lamb == 0 else ("last", "all"))]

    def _regularizer_params(self, regularizer: str) -> dict:
        """The reference warms adversarial embedding up for 10 epochs before its own; within the grid's
        epochs, a quarter of them play no game."""
        epochs = self.base.epochs or self.base.with_changes().epochs
        return {"adv_embed_warmup": min(max(1, epochs // 4), epochs - 1)} if regularizer == "adv_embed" else {}

    @staticmethod
    def _rate(attack: str, rate) -> float:
        return attack_class(attack).reference_rates[0] if rate == REFERENCE_RATE else float(rate)

    def _focus(self, **changes) -> RunConfig:
        """ML-MMDR at the largest λ on the focus attack, with ``changes``."""
        return self.base.with_changes(**{"attack_name": self.focus_attack, "mlmmdr_lamb": self.lamb,
                                         "mlmmdr_layer": "all", **changes})

    def studies(self) -> dict:
        """{study: [RunConfig]} for the studies this grid runs (see the module docstring)."""
        studies = {"lambda": self._methods(self.attacks, self.lambdas)}
        if self.second_model:
            studies["model"] = self._methods(self.second_attacks, (self.lamb,), model_name=self.second_model,
                                             width=self.second_width)
        if self.kernels:
            studies["kernel"] = [self._focus(kernel=kernel, seed=seed) for seed in self.kernel_claim_seeds
                                 for kernel in self.kernels]
        if self.compare_pooled:
            studies["loss"] = [self._focus(ce_reduction=reduction) for reduction in ("split", "pooled")]
        if self.adaptive_attacks or self.stacked_attacks:
            studies["adaptive"] = self._adaptive()
        if self.regularizer_weights and self.regularizer_attacks and self.regularizer_seeds:
            studies["regularizers"] = self._regularizers()
        if self.erased_attacks and self.reference_model:
            studies["erase_reference"] = self._pairs(model_name=self.reference_model, width=1.0, lr=self.reference_lr)
        if self.erased_attacks:
            studies["erase_tuned"] = self._pairs()
        return {name: [config.validate() for config in configs] for name, configs in studies.items()}

    def runs(self) -> list:
        """Every distinct run of every study, in study order."""
        seen = {}
        for configs in self.studies().values():
            for config in configs:
                seen.setdefault(RunDir.of(config).path, config)
        return list(seen.values())

    def _pairs(self, **changes) -> list:
        """RBT and ML-MMDR at the largest λ of every erased attack and erasing seed."""
        return [self.base.with_changes(attack_name=attack, seed=seed, mlmmdr_lamb=lamb, mlmmdr_layer="all", **changes)
                for attack in self.erased_attacks for seed in self.erasing_seeds for lamb in (0.0, self.lamb)]

    def erasing_stages(self, config: RunConfig, studies: dict) -> list:
        """The erasing stages of ``config``: the references' settings in ``erase_reference``; in
        ``erase_tuned`` the tuning stage on the run itself, then each defense with the choice that
        tuning made: every model, RBT and ML-MMDR on every erasing seed, is tuned on its own
        validation set, as a defender tunes on the model it holds (defenses/erasing/tuning.py)."""
        if _member(config, studies.get("erase_reference", [])):
            return [(name, self._erasing_options(name)) for name in ERASERS]
        if not _member(config, studies.get("erase_tuned", [])):
            return []
        own = str(RunDir.of(config).path)
        return [("tune", self._erasing_options("tune"))] + [
            (name, replace(self._erasing_options(name) or get(name).default_options(), tuned_settings=own))
            for name in ERASERS]

    def _erasing_options(self, name: str):
        """Stage ``name``'s options, with ``erase_share_of`` applied when set."""
        options = self.stage_options.get(name)
        if self.erase_share_of is None:
            return options
        return replace(options or get(name).default_options(), defense_share_of=self.erase_share_of)

    def every_detector(self, config: RunConfig, studies: dict) -> bool:
        """Whether a claim reads this run's detectors beyond the paper's (C9: the main grid's RBT and
        largest-λ runs; C10, C11: the adaptive study and the ML-MMDR runs it compares with; C12, C13:
        the regularizers study). The
        others (the smaller λ, the kernel and loss studies) are evaluated with AC, SS and SR alone,
        which is all their claims and figures read, at a third of the cost."""
        if any(_member(config, studies.get(name, [])) for name in ("model", "adaptive", "regularizers")):
            return True
        return _member(config, studies.get("lambda", [])) and (config.method == "RBT" or config.mlmmdr_lamb == self.lamb)

    def _evaluate_options(self, config: RunConfig, studies: dict):
        options = self.stage_options.get("evaluate")
        if self.every_detector(config, studies) or (options is not None and options.detectors):
            return options
        return replace(options or get("evaluate").default_options(), detectors=PAPER_DETECTORS)

    def stages(self, config: RunConfig, studies: dict = None) -> list:
        studies = studies or self.studies()
        paper = any(_member(config, studies.get(name, [])) for name in PAPER_STUDIES)
        names = ["train", "evaluate"] if paper or any(
            _member(config, studies.get(name, [])) for name in ("adaptive", "regularizers")) else ["train"]
        # SL-MMDR is in no Neural Cleanse or pruning claim (C5, C8), and C5 reads ML-MMDR's NC alone: RBT's
        # (the figure's comparison) runs on the base seed only; each NC is half an hour on a CPU
        if config.attack_name in self.defended_attacks and config.method != "SL-MMDR" and any(
                _member(config, studies.get(name, [])) for name in ("lambda", "model")):
            nc = config.method == "ML-MMDR" or config.seed == self.base.seed
            names += (["nc"] if nc else []) + ["prune", "prune_places"]
        if self.draws_features(config, studies):
            names.append("scatter")
        return [(name, self._evaluate_options(config, studies) if name == "evaluate" else self.stage_options.get(name))
                for name in names] + self.erasing_stages(config, studies)

    def draws_features(self, config: RunConfig, studies: dict = None) -> bool:
        """Whether the run's representations are drawn (Fig. 4's scatter): the first attack's RBT and
        largest-λ SL-/ML-MMDR runs of the λ sweep on the base seed. It is a stage of the run, drawn
        while the model is on disk (the results archive keeps no checkpoint)."""
        studies = studies or self.studies()
        return (_member(config, studies["lambda"]) and config.attack_name == self.attacks[0]
                and config.mlmmdr_lamb in (0, self.lamb) and config.seed == self.base.seed)

    def jobs(self) -> list:
        studies = self.studies()
        return [Job(config, self.stages(config, studies)) for config in self.runs()]


# {field: default} of Grid, the one place the grid's defaults are declared (reproduce.py's flags read them)
GRID_DEFAULTS = {option.name: option.default for option in fields(Grid) if option.default is not MISSING}


def _member(config: RunConfig, configs: list) -> bool:
    path = RunDir.of(config).path
    return any(RunDir.of(other).path == path for other in configs)


def collect(grid: Grid) -> list:
    """Every run's config, the studies it belongs to and its result files, for the report. An
    evaluation.json that holds no whole evaluation (cut to its header) counts as not there yet, as
    for the grid, which evaluates the run again; a metrics.json whose BA or ASR is not a number is
    refused in one line (training wrote it: retraining is what writes it again)."""
    studies = grid.studies()
    records = []
    for config in grid.runs():
        run = RunDir.of(config)
        record = {"config": config, "run_dir": run.path,
                  "studies": [name for name, configs in studies.items() if _member(config, configs)],
                  **{key: run.read(key) for key in ("metrics", "evaluation", "nc", "prune", "prune_places", "tune",
                                                    *ERASERS)}}
        if record["evaluation"] is not None and not get("evaluate").complete(record["evaluation"]):
            record["evaluation"] = None
        for key, value in (record["metrics"] or {}).items():
            if key in ("ba", "asr", "asr_other_classes", "asr_worst_other_class") and not (
                    value is None or isinstance(value, (int, float)) and not isinstance(value, bool)):
                raise UserError(f"{run.file('metrics')} holds {key} = {value!r}, not a number; {rewrite('metrics')}")
        records.append(record)
    return records
