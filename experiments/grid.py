"""The reproduction grid: attacks × {RBT, SL-MMDR, ML-MMDR} × λ, and the stages each run gets:
train and evaluate for all; Neural Cleanse and pruning for the defended attacks; fine-tuning, NAD
and ARGD (beyond the paper: does ML-MMDR resist erasing?) on the RBT and the largest-λ ML-MMDR run
of each erased attack.

It only says *what* to run; pipeline/schedule.py runs each run's missing stages, so an
interrupted reproduction resumes where it stopped.
"""
from dataclasses import dataclass, field

from defenses import ERASERS
from pipeline.config import RunConfig
from pipeline.rundir import RunDir
from pipeline.schedule import Job

ATTACKS = ("patched", "blended", "sig", "warped")


@dataclass
class Grid:
    base: RunConfig                 # what every run shares (data, model, width, epochs, seed, out_dir)
    attacks: tuple = ATTACKS
    lambdas: tuple = (0.1, 0.2, 0.3)
    defended_attacks: tuple = ("patched",)
    erased_attacks: tuple = ATTACKS
    stage_options: dict = field(default_factory=dict)  # {stage name: options} where not the defaults

    def runs(self) -> list:
        """Every run's RunConfig, RBT first for each attack, then SL-MMDR and ML-MMDR at each λ."""
        out = []
        for attack in self.attacks:
            out.append(self.base.with_changes(attack_name=attack, mlmmdr_lamb=0.0))
            for layer in ("last", "all"):
                for lamb in self.lambdas:
                    out.append(self.base.with_changes(attack_name=attack, mlmmdr_lamb=lamb, mlmmdr_layer=layer))
        return [config.validate() for config in out]

    def erased(self, config: RunConfig) -> bool:
        """RBT and ML-MMDR at the largest λ, for the erased attacks."""
        return config.attack_name in self.erased_attacks and (
            config.method == "RBT" or (config.method == "ML-MMDR" and config.mlmmdr_lamb == max(self.lambdas)))

    def stages(self, config: RunConfig) -> list:
        names = ["train", "evaluate"] + (["nc", "prune"] if config.attack_name in self.defended_attacks else [])
        names += list(ERASERS) if self.erased(config) else []
        return [(name, self.stage_options.get(name)) for name in names]

    def jobs(self) -> list:
        return [Job(config, self.stages(config)) for config in self.runs()]


def collect(grid: Grid) -> list:
    """Every run's config and result files, for the report."""
    records = []
    for config in grid.runs():
        run = RunDir.of(config)
        records.append({"config": config, "run_dir": run.path,
                        **{key: run.read(key) for key in ("metrics", "evaluation", "nc", "prune", *ERASERS)}})
    return records
