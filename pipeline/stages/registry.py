"""Stages: named steps of a run, each declaring the file it writes and the stages it needs.

A run stage is ``compute(config, options) -> dict`` for one run; a group stage is
``compute(group, runs, options) -> dict`` for the runs of one data/model/attack (the group
figures). ``output`` says where the stage's result lands, so a scheduler knows what is missing
without running anything, and the entry scripts and the reproduction grid share one code path.
"""
import os
from dataclasses import dataclass
from typing import Callable

from pipeline.config import NOT_IDENTITY, inputs_hash
from pipeline.prepare import check_identity, nondeterministic_op
from pipeline.rundir import RunDir
from utils.errors import UserError, unknown_name
from utils.io import remove_orphans


@dataclass(frozen=True)
class Stage:
    name: str
    compute: Callable
    output: Callable            # (RunDir, options) -> Path for a run stage; (group, options) -> Path for a group
    options: type = None        # dataclass of the stage's options (None: the run config is all it needs)
    needs: tuple = ()           # stages whose outputs must exist first
    scope: str = "run"          # "run" or "group"
    help: str = ""
    record: str = None          # RunDir key of the JSON recording the inputs_hash its output was computed from
    follows: tuple = ()         # stages it reads when present (a rerun of one makes it stale) but can do without
    artifacts: tuple = ()       # RunDir keys of files it writes that the results archive does not keep (checkpoints)
    summary: str = None         # RunDir key of a JSON that shows it finished when its output is such an artifact
    ready: Callable = None      # (options) -> whether what it reads from another run is there yet (else deferred)
    agrees: Callable = None     # (record, options) -> whether what it read from another run still says what it did
    complete: Callable = None   # (record) -> whether the record holds the stage's whole result (else computed again)

    def default_options(self):
        return self.options() if self.options is not None else None


STAGES = {}


def register(name: str, *, output, options=None, needs=(), scope: str = "run", help: str = "", record: str = None,
             follows=(), artifacts=(), summary: str = None, ready: Callable = None, agrees: Callable = None,
             complete: Callable = None):
    """Decorator: register ``compute`` as the stage ``name``."""
    def wrap(compute):
        if name in STAGES:
            raise ValueError(f"stage '{name}' is registered twice")
        STAGES[name] = Stage(name, compute, output, options, tuple(needs), scope, help, record, tuple(follows),
                             tuple(artifacts), summary, ready, agrees, complete)
        return compute
    return wrap


def get(name: str) -> Stage:
    if name not in STAGES:
        raise unknown_name("stage", name, STAGES)
    return STAGES[name]


def output_of(name: str, run, options=None):
    stage = get(name)
    return stage.output(run, options if options is not None else stage.default_options())


def require(run, needs) -> None:
    """Raise UserError naming the first needed stage whose output ``run`` lacks, or saying that the
    run failed to train."""
    failure = run.failure()
    if failure:
        raise UserError(f"{run.name} failed to train ({failure}); nothing is measured on a failed run: "
                        f"fix the cause and train it again")
    for need in needs:
        path = output_of(need, run)
        if not path.is_file():
            raise UserError(f"no {path.name} in {run.path}: run the '{need}' stage first "
                            f"({get(need).help or need})")


def up_to_date(name: str, run, config, options=None) -> bool:
    """Whether stage ``name``'s output exists and was computed from this configuration and these
    options (the inputs_hash recorded beside it); a stage that records none is up to date once its
    output exists."""
    stage = get(name)
    options = options if options is not None else stage.default_options()
    if not stage.output(run, options).is_file():
        return False
    return stage.record is None or _recorded_with(stage, run, config, options)


def _recorded_with(stage: Stage, run, config, options) -> bool:
    """Whether the stage's record says it ran with this configuration and these options, and with
    what it read from another run as that run's files say now (``Stage.agrees``), and holds its whole
    result (``Stage.complete``): a record cut to its header, or written by another version without a
    field, is not a result, and the stage computes it again as it would a missing one."""
    recorded = run.read(stage.record) or {}
    return (recorded.get("inputs_hash") == inputs_hash(config, options)
            and (stage.agrees is None or stage.agrees(recorded, options))
            and (stage.complete is None or stage.complete(recorded)))


def ready(name: str, options=None) -> bool:
    """Whether stage ``name`` can run now: what it reads from another run (a tuning chosen on the
    attack's RBT run) is there. A scheduler defers a stage that is not, and retries it later."""
    stage = get(name)
    return stage.ready is None or stage.ready(options if options is not None else stage.default_options())


def restorable(name: str, run, config, options=None) -> bool:
    """Whether stage ``name`` finished with these inputs but a file it wrote that the results archive
    does not keep (``Stage.artifacts``: train's checkpoint, fine-tuning's model) is missing: a run
    restored from results/reproduce. Its record is up to date, and its output or, where the output
    is itself the artifact, its summary is there. Such a stage runs again only when a pending stage
    needs or follows it (pipeline.jobs.Job.pending)."""
    stage = get(name)
    options = options if options is not None else stage.default_options()
    if stage.record is None or all(run.has(key) for key in stage.artifacts):
        return False
    if not (stage.output(run, options).is_file() or (stage.summary is not None and run.has(stage.summary))):
        return False
    return _recorded_with(stage, run, config, options)


def run_stage(name: str, config, options=None) -> dict:
    """Run the run stage ``name`` for ``config`` (its needs must be done). A stage on a trained run
    measures the run as trained: a flag contradicting its checkpoint on what defines the model is
    an error, and the rest of the configuration is read from the run, the execution settings
    (device, batch size, progress) from the flags."""
    stage = get(name)
    if stage.scope != "run":
        raise ValueError(f"stage '{name}' is a group stage; use run_group_stage")
    run = RunDir.of(config)
    require(run, stage.needs)
    options = options if options is not None else stage.default_options()
    try:
        return _compute(stage, name, run, config, options)
    except RuntimeError as error:  # torch refusing a nondeterministic op under --deterministic: one line
        refused = nondeterministic_op(error)
        if refused is None:
            raise
        raise refused from None


def _compute(stage: Stage, name: str, run: RunDir, config, options) -> dict:
    if not stage.needs:  # training: it takes the run's lock itself, for its staging directory
        return stage.compute(config, options)
    check_identity(config, run.read("config"), run.file("config"))
    config = run.config(**{key: getattr(config, key) for key in NOT_IDENTITY - {"out_dir", "run_name"}})
    if not os.access(run.path, os.W_OK | os.X_OK):  # found now, not after the stage's computing
        raise UserError(f"{run.path} is not writable, and the {name} stage writes its results there; make it "
                        f"writable, or copy the run to a writable directory and pass that as --out_dir")
    with run.locked():  # one writer per run: what a killed writer left behind is removed, no live one's
        remove_orphans(run.path)
        return stage.compute(config, options)


def run_group_stage(name: str, group: str, runs: list, options=None) -> dict:
    stage = get(name)
    if stage.scope != "group":
        raise ValueError(f"stage '{name}' is a run stage; use run_stage")
    return stage.compute(group, runs, options if options is not None else stage.default_options())
