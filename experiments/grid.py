"""The reproduction grid: attacks × {RBT, SL-MMDR, ML-MMDR} × λ, and the stages each run gets.

It only says *what* to run; pipeline/schedule.py runs each run's missing stages, so an
interrupted reproduction resumes where it stopped.
"""
from dataclasses import dataclass, field

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

    def stages(self, config: RunConfig) -> list:
        names = ["train", "evaluate"] + (["nc", "prune"] if config.attack_name in self.defended_attacks else [])
        return [(name, self.stage_options.get(name)) for name in names]

    def jobs(self) -> list:
        return [Job(config, self.stages(config)) for config in self.runs()]


def collect(grid: Grid) -> list:
    """Every run's config and result files, for the report."""
    records = []
    for config in grid.runs():
        run = RunDir.of(config)
        records.append({"config": config, "run_dir": run.path,
                        **{key: run.read(key) for key in ("metrics", "evaluation", "nc", "prune")}})
    return records
