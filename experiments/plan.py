"""What the grid will cost before it runs (``reproduce.py --plan``): its runs and stages per study, the
stages still to run, and their hours estimated from the stage times the runs directory has measured.

A stage still to run is estimated by the median of the stages of its kind (its model, the stage, and
for an evaluate stage its detector set: the paper's three or every one) that the newest invocation
of the grid measured, which ran the code and machine as they are; else by the time its own run
measured for it last (a stage made stale by a changed protocol costs about what it cost before);
else by the median of its kind, else of the stage on any model; a stage no run has measured yet is
counted as unknown, never as free. Wall time at ``workers`` runs at once is the stage time divided by them: a
lower bound, since runs are not of equal length and the last ones run alone.
"""
from collections import defaultdict
from statistics import median

from defenses import PAPER_DETECTORS


def stage_key(job, stage: str, options) -> tuple:
    """(model, stage, variant): what makes two stages cost alike. The variant of an evaluate stage
    is its detector set (the paper's three cost a fraction of every detector)."""
    variant = ""
    if stage == "evaluate":
        detectors = tuple(getattr(options, "detectors", ()) or ())
        variant = "paper" if detectors and set(detectors) <= set(PAPER_DETECTORS) else "every"
    return job.config.model_name, stage, variant


def medians(jobs, timings: dict) -> tuple:
    """({(model, stage, variant): median seconds}, {stage: median seconds}) over the measured stages."""
    by_key, by_stage = defaultdict(list), defaultdict(list)
    for job in jobs:
        measured = timings.get(job.config.run_name, {})
        for stage, options in job.stages:
            if stage in measured:
                by_key[stage_key(job, stage, options)].append(measured[stage])
                by_stage[stage].append(measured[stage])
    return ({key: median(values) for key, values in by_key.items()},
            {stage: median(values) for stage, values in by_stage.items()})


def estimate(jobs, studies: dict, timings: dict, pending: dict, recent: dict = None) -> dict:
    """Per stage and per study: stages in all, stages to run, and the seconds estimated for those.

    ``jobs``: the grid's jobs; ``studies``: {study: [run name]}; ``timings``: {run name: {stage:
    seconds}} as measured last; ``pending``: {run name: [stage names still to run]}; ``recent``:
    {run name: {stage: seconds}} measured by the newest invocation (preferred, by kind)."""
    by_key, by_stage = medians(jobs, timings)
    recent_by_key, _ = medians(jobs, recent or {})
    rows = {"stages": defaultdict(lambda: {"stages": 0, "to_run": 0, "seconds": 0.0, "unknown": 0}),
            "studies": defaultdict(lambda: {"runs": 0, "stages": 0, "to_run": 0, "seconds": 0.0, "unknown": 0})}
    study_of = defaultdict(list)
    for study, names in studies.items():
        for name in names:
            study_of[name].append(study)
    for job in jobs:
        name = job.config.run_name
        # a run in two studies is counted in the first, so that the studies add up to the grid
        study = rows["studies"][(study_of.get(name) or ["(none)"])[0]]
        study["runs"] += 1
        for stage, options in job.stages:
            row = rows["stages"][stage]
            row["stages"] += 1
            study["stages"] += 1
            if stage not in pending.get(name, ()):
                continue
            key = stage_key(job, stage, options)
            seconds = recent_by_key.get(key, timings.get(name, {}).get(stage))
            if seconds is None:
                seconds = by_key.get(key, by_stage.get(stage))
            for target in (row, study):
                target["to_run"] += 1
                if seconds is None:
                    target["unknown"] += 1
                else:
                    target["seconds"] += seconds
    return {kind: dict(values) for kind, values in rows.items()}


def render(estimated: dict, workers: int, budget_hours: float) -> str:
    """The estimate as two plain-text tables and a total against the profile's budget."""
    lines = []
    for kind, label in (("studies", "study"), ("stages", "stage")):
        lines.append(f"{label:<18} {'runs' if kind == 'studies' else '':>5} {'stages':>7} {'to run':>7} "
                     f"{'est. h':>7} {'unknown':>8}")
        for name, row in estimated[kind].items():
            lines.append(f"{name:<18} {row.get('runs', ''):>5} {row['stages']:>7} {row['to_run']:>7} "
                         f"{row['seconds'] / 3600:>7.2f} {row['unknown']:>8}")
        lines.append("")
    stage_hours = sum(row["seconds"] for row in estimated["stages"].values()) / 3600
    unknown = sum(row["unknown"] for row in estimated["stages"].values())
    wall = stage_hours / max(workers, 1)
    verdict = "over" if wall > budget_hours else ("so far within" if unknown else "within")
    lines.append(f"to run: {stage_hours:.1f} h of stage time, at least {wall:.1f} h of wall time with {workers} at "
                 f"once: {verdict} the profile's {budget_hours:g} h"
                 + (f" ({unknown} stages no run has measured yet are not counted)" if unknown else "")
                 + ". Each stage is estimated from the newest invocation's times of its kind where it measured "
                   "one, else from earlier times, which overstate a stage made faster since")
    return "\n".join(lines)
