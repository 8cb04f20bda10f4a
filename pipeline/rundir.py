"""A run's directory: every path of a run, and reading what its stages wrote.

    runs/<run name>/model.pt            checkpoint (train)
                    config.json         the resolved configuration (train)
                    metrics.json        final BA/ASR and the per-epoch history (train)
                    history.csv         the same history, one row per epoch (train)
                    evaluation.json/.md distances and detections (evaluate)
                    defense_nc.json     Neural Cleanse (nc); defense_nc_triggers.pt its masks;
                    defense_nc_resume.pt  its optimisation state while it runs (removed when done)
                    defense_prune.json  pruning curve (prune)
                    defense_<finetune|nad|argd>.json  BA/ASR before, per epoch and after erasing;
                    defense_<finetune|nad|argd>_model.pt  the erased model (finetune's is NAD's and ARGD's teacher)
                    defense_tune.json   the erasing defenses' settings chosen on the defender's validation set (tune)
                    scatter.json        the feature scatter's path, or why the run has none (scatter)
                    stage_seconds.json  each stage's wall time, saved as it ends (the grid's scheduler)
                    stage_runs.json     every attempt of every stage, appended as it ends: {attempts: [{stage, seconds}]}
                    failed.json         why training stopped (a diverged loss); no result is reported
                    resume.pt           everything the next epoch needs, while training (train --resume)
    figures/<run name>/<kind>.png       per-run figures
    figures/<data>_<model>_<attack>/<kind>.png   per-group figures (every λ and method of one attack)
"""
import glob
from pathlib import Path

from pipeline.config import RunConfig
from utils.errors import UserError
from utils.io import exclusive, load_checkpoint, read_json, save_json

FILES = {"checkpoint": "model.pt", "config": "config.json", "metrics": "metrics.json", "history": "history.csv",
         "evaluation": "evaluation.json", "evaluation_report": "evaluation.md", "nc": "defense_nc.json",
         "nc_triggers": "defense_nc_triggers.pt", "nc_resume": "defense_nc_resume.pt", "prune": "defense_prune.json",
         "prune_places": "defense_prune_places.json", "failure": "failed.json",
         "resume": "resume.pt", "finetune": "defense_finetune.json", "finetune_model": "defense_finetune_model.pt",
         "nad": "defense_nad.json", "nad_model": "defense_nad_model.pt", "argd": "defense_argd.json",
         "argd_model": "defense_argd_model.pt", "tune": "defense_tune.json", "scatter": "scatter.json",
         "stage_seconds": "stage_seconds.json", "stage_runs": "stage_runs.json"}


# How a run's record that cannot be read is written again, each checked to work: training reads no
# metrics.json or failed.json of the run it replaces, and --overwrite reads no config.json; a single
# run's evaluate.py and defend.py stages read no record of their own before writing it (evaluate.py
# --all_runs and the grid do, to see whether it is up to date: --force, or deleting it, gets past that).
_RETRAIN = "python main.py with the run's flags"
REWRITE = {"config": f"retrain the run: {_RETRAIN} and --overwrite",
           "metrics": f"delete it and retrain the run: {_RETRAIN}",
           "failure": f"retrain the run: {_RETRAIN}",
           "evaluation": "delete it, or write it anew with python evaluate.py and the run's flags (evaluate.py "
                         "--all_runs --force re-evaluates every run)",
           **{key: f"delete it, or write it anew with python defend.py --defense {key} and the run's flags"
              for key in ("nc", "prune", "finetune", "nad", "argd", "tune")},
           "stage_seconds": "delete it (it only records how long the run's stages took)",
           "stage_runs": "delete it (it only records how long each attempt of the run's stages took)"}


def rewrite(key: str) -> str:
    """What to do about the run's record ``key`` when it cannot be read (``REWRITE``)."""
    return REWRITE.get(key, "delete it, and the stage that writes it runs again")

class RunDir:
    """The directory ``<out_dir>/<run name>`` and the files in it, by key (see ``FILES``)."""

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def of(cls, config: RunConfig) -> "RunDir":
        """``<out_dir>/<run name>``, or where it points when it is a symbolic link: a run kept on
        another disk is written and read there, and its link keeps pointing at it."""
        path = Path(config.out_dir).expanduser() / config.run_name
        if not path.is_symlink():
            return cls(path)
        try:
            return cls(path.resolve(strict=False))
        except (RuntimeError, OSError) as error:  # a loop of links (Python raises RuntimeError before 3.13)
            raise UserError(f"{path} is a symbolic link that cannot be followed ({error}); remove or repoint it, or "
                            f"give another --out_dir") from None

    def locked(self):
        """Hold the run's lock (``<parent>/.<name>.lock``) for a ``with`` block: one writer per run
        (utils.io.exclusive)."""
        return exclusive(self.path.parent / f".{self.name}.lock", f"the run {self.path}")

    @property
    def name(self) -> str:
        return self.path.name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, key: str) -> Path:
        return self.path / FILES[key]

    def has(self, key: str) -> bool:
        return self.file(key).is_file()

    @property
    def trained(self) -> bool:
        return self.has("checkpoint") and self.has("config") and not self.has("failure")

    def failure(self) -> str:
        """Why the run's training failed (failed.json), or "" when it did not."""
        record = self.read("failure")
        return record["error"] if record else ""

    def read(self, key: str):
        """The JSON file ``key`` as a dict, or None when the stage that writes it has not run; one that
        cannot be read is a UserError saying how to write it again (``REWRITE``)."""
        path = self.file(key)
        if not path.is_file():
            return None
        return read_json(path, dict, rewrite(key))

    def write(self, key: str, obj) -> Path:
        save_json(obj, self.file(key))
        return self.file(key)

    def checkpoint(self) -> dict:
        path = self.file("checkpoint")
        if not path.is_file():
            raise UserError(f"no trained run at {path}; train it first with python main.py and the same "
                            f"flags (or pass --out_dir/--run_name)")
        try:
            return load_checkpoint(path, keys=("state_dict",))
        except UserError as error:
            raise UserError(f"cannot load the run's model: {error}; retrain the run (main.py with its flags and "
                            f"--overwrite)") from None

    def config(self, **overrides) -> RunConfig:
        """The run's configuration as trained, with execution settings (device, batch size,
        progress) overridden; it is read from this directory wherever the directory now lives."""
        values = self.read("config")
        if values is None:
            raise UserError(f"{self.file('config')} is missing; it is not a trained run")
        values.update(out_dir=str(self.path.parent), run_name=self.name, **overrides)
        return RunConfig.from_dict(values, str(self.file("config"))).resolve_defaults()

    def figure(self, kind: str, figure_dir) -> Path:
        return Path(figure_dir) / self.name / f"{kind}.png"


def group_figure(group: str, kind: str, figure_dir) -> Path:
    """``figures/<data>_<model>_<attack>/<kind>.png``; group kinds never equal run kinds, so a run
    whose name is its group's (the RBT run with every default) cannot collide."""
    return Path(figure_dir) / group / f"{kind}.png"


def find_runs(pattern) -> list:
    """Trained runs (directories with model.pt and config.json) in a directory or matching a glob."""
    root = Path(pattern)
    candidates = [root] + sorted(root.iterdir()) if root.is_dir() else [Path(p) for p in sorted(glob.glob(str(pattern)))]
    runs = [RunDir(path) for path in candidates if path.is_dir() and RunDir(path).trained]
    if not runs:
        raise UserError(f"no trained runs (directories with model.pt and config.json) in '{pattern}'; "
                        f"pass a runs directory such as runs/ or a glob such as 'runs/digits_*'")
    return runs


def grouped(runs: list) -> dict:
    """{group name: [RunDir]}: runs of the same data, model and attack."""
    groups = {}
    for run in runs:
        groups.setdefault(run.config().group, []).append(run)
    return groups
