"""The reproduction grid: which runs answer which of the paper's questions, and the stages each gets.

Studies (each a list of runs; a run shared by two studies is trained once):

- ``lambda``: every attack × {RBT; SL-MMDR and ML-MMDR at each λ} on the base model (paper Fig. 3,
  TABLE 2, Figs. 5–7);
- ``model``: the second architecture (PreActResNet-18, the paper's headline model) on a few attacks
  × {RBT, SL-MMDR, ML-MMDR at the largest λ};
- ``kernel``: ML-MMDR at the largest λ on the focus attack with each TABLE 3 kernel (§6.3, Fig. 11);
- ``seed``: RBT and ML-MMDR at the largest λ on the focus attack for each seed;
- ``loss``: that ML-MMDR run with Algorithm 1's split loss and with the prototype's pooled loss.

Stages: train and evaluate for all; Neural Cleanse (at the reference's budget: up to an hour a run
on a CPU) and pruning on the defended attacks' runs of the ``lambda`` and ``model`` studies; fine-tuning, NAD and ARGD (beyond the paper: does
ML-MMDR resist erasing?) on the ``lambda`` study's RBT and largest-λ ML-MMDR run of each erased attack.

It only says *what* to run; pipeline/schedule.py runs each run's missing stages, so an
interrupted reproduction resumes where it stopped.
"""
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Optional

from defenses import ERASERS
from pipeline.config import RunConfig
from pipeline.rundir import RunDir
from pipeline.schedule import Job
from pipeline.stages import get
from regularizers.kernels import KERNELS

ATTACKS = ("patched", "blended", "sig", "warped")
PAPER_STUDIES = ("lambda", "model", "kernel", "seed", "loss")
STUDIES = PAPER_STUDIES + ("erase_reference", "erase_tuned")


@dataclass
class Grid:
    base: RunConfig                 # what every run shares (data, model, width, epochs, seed, out_dir)
    attacks: tuple = ATTACKS
    lambdas: tuple = (0.1, 0.2, 0.3)
    defended_attacks: tuple = ("patched",)
    erased_attacks: tuple = ATTACKS
    erasing_seeds: tuple = (0, 1, 2)
    reference_model: Optional[str] = "wrn16_1"   # the erasing defenses' own model family (None: no such arm)
    reference_lr: float = 0.1                    # … and the learning rate it is trained at (NAD's and ARGD's code)
    second_model: Optional[str] = "preactresnet18"
    second_width: float = 0.125     # PreActResNet-18 at 1/8 width costs about VGG-11 at 1/4 (FLOPs)
    second_attacks: tuple = ("patched", "blended")
    focus_attack: str = "patched"   # the kernel, seed and loss studies' attack (Fig. 11's)
    kernels: tuple = tuple(KERNELS)
    seeds: tuple = (0, 1, 2)
    compare_pooled: bool = True
    stage_options: dict = field(default_factory=dict)  # {stage name: options} where not the defaults

    @property
    def lamb(self) -> float:
        """The λ at which the claims are judged and the other studies are run: the largest."""
        return max(self.lambdas)

    def _methods(self, attacks, lambdas, **shared) -> list:
        """RBT first for each attack, then SL-MMDR and ML-MMDR at each λ."""
        out = []
        for attack in attacks:
            out.append(self.base.with_changes(attack_name=attack, mlmmdr_lamb=0.0, **shared))
            out += [self.base.with_changes(attack_name=attack, mlmmdr_lamb=lamb, mlmmdr_layer=layer, **shared)
                    for layer in ("last", "all") for lamb in lambdas]
        return out

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
            studies["kernel"] = [self._focus(kernel=kernel) for kernel in self.kernels]
        if len(self.seeds) > 1:
            studies["seed"] = [self._focus(mlmmdr_lamb=lamb, seed=seed) for seed in self.seeds
                               for lamb in (0.0, self.lamb)]
        if self.compare_pooled:
            studies["loss"] = [self._focus(ce_reduction=reduction) for reduction in ("split", "pooled")]
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
        ``erase_tuned`` a tuning, then each defense with the choice of the RBT run of its attack and
        seed."""
        if _member(config, studies.get("erase_reference", [])):
            return [(name, self.stage_options.get(name)) for name in ERASERS]
        if not _member(config, studies.get("erase_tuned", [])):
            return []
        chosen_on = RunDir.of(config.with_changes(mlmmdr_lamb=0.0)).path
        return [("tune", self.stage_options.get("tune"))] + [
            (name, replace(self.stage_options.get(name) or get(name).default_options(), tuned_settings=str(chosen_on)))
            for name in ERASERS]

    def stages(self, config: RunConfig, studies: dict = None) -> list:
        studies = studies or self.studies()
        paper = any(_member(config, studies.get(name, [])) for name in PAPER_STUDIES)
        names = ["train", "evaluate"] if paper else ["train"]
        if config.attack_name in self.defended_attacks and any(_member(config, studies.get(name, []))
                                                                for name in ("lambda", "model")):
            names += ["nc", "prune"]
        return [(name, self.stage_options.get(name)) for name in names] + self.erasing_stages(config, studies)

    def jobs(self) -> list:
        studies = self.studies()
        return [Job(config, self.stages(config, studies)) for config in self.runs()]


# {field: default} of Grid, the one place the grid's defaults are declared (reproduce.py's flags read them)
GRID_DEFAULTS = {option.name: option.default for option in fields(Grid) if option.default is not MISSING}


def _member(config: RunConfig, configs: list) -> bool:
    path = RunDir.of(config).path
    return any(RunDir.of(other).path == path for other in configs)


def collect(grid: Grid) -> list:
    """Every run's config, the studies it belongs to and its result files, for the report."""
    studies = grid.studies()
    records = []
    for config in grid.runs():
        run = RunDir.of(config)
        records.append({"config": config, "run_dir": run.path,
                        "studies": [name for name, configs in studies.items() if _member(config, configs)],
                        **{key: run.read(key) for key in ("metrics", "evaluation", "nc", "prune", "tune", *ERASERS)}})
    return records
