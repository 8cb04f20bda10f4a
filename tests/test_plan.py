"""reproduce.py --plan: the stages still to run, estimated from measured stage times (experiments/plan.py)."""
import pytest

from defenses import PAPER_DETECTORS
from evaluation.protocol import EvalOptions
from experiments.plan import estimate, render
from pipeline.config import RunConfig
from pipeline.jobs import Job

EVERY = EvalOptions()
PAPER = EvalOptions(detectors=PAPER_DETECTORS)


def job(name: str, model: str = "vgg11", evaluate=EVERY) -> Job:
    config = RunConfig(data_name="digits", model_name=model, run_name=name, out_dir="unused")
    return Job(config, [("train", None), ("evaluate", evaluate)])


def test_a_stage_costs_its_own_measured_time_else_the_median_of_its_kind():
    jobs = [job("a"), job("b"), job("c"), job("p", evaluate=PAPER), job("q", evaluate=PAPER), job("r", "resnet18")]
    timings = {"a": {"train": 100.0, "evaluate": 100.0}, "b": {"train": 200.0, "evaluate": 300.0},
               "p": {"train": 300.0, "evaluate": 10.0}}
    pending = {"a": ["evaluate"], "c": ["train", "evaluate"], "q": ["evaluate"], "r": ["train", "evaluate"]}
    studies = {"first": ["a", "b", "c"], "second": ["p", "q", "r"]}
    rows = estimate(jobs, studies, timings, pending)
    evaluate, train = rows["stages"]["evaluate"], rows["stages"]["train"]
    # a: its own 100; c: the median of vgg11's every-detector evaluations (100, 300) = 200; q: the paper
    # variant's 10; r: no resnet18 evaluation measured, so the median over every model (10, 100, 300) = 100
    assert evaluate == {"stages": 6, "to_run": 4, "seconds": 100 + 200 + 10 + 100, "unknown": 0}
    # c: vgg11's median (100, 200, 300) = 200; r: no resnet18 training measured, every model's median = 200
    assert train == {"stages": 6, "to_run": 2, "seconds": 400.0, "unknown": 0}
    assert rows["studies"]["first"]["runs"] == 3 and rows["studies"]["first"]["seconds"] == 100 + 200 + 200
    assert rows["studies"]["second"]["seconds"] == 10 + 100 + 200


def test_a_stage_no_run_has_measured_is_unknown_not_free():
    rows = estimate([job("a")], {"s": ["a"]}, {}, {"a": ["train", "evaluate"]})
    assert rows["stages"]["train"] == {"stages": 1, "to_run": 1, "seconds": 0.0, "unknown": 1}
    text = render(rows, workers=2, budget_hours=12)
    assert "(2 stages no run has measured yet are not counted)" in text


@pytest.mark.parametrize("seconds, verdict", [(3600 * 20, "within"), (3600 * 30, "over")])
def test_the_wall_time_is_the_stage_time_over_the_runs_at_once_against_the_budget(seconds, verdict):
    rows = estimate([job("a")], {"s": ["a"]}, {"a": {"train": seconds}}, {"a": ["train"]})
    text = render(rows, workers=2, budget_hours=12)
    assert f"with 2 at once: {verdict} the profile's 12 h" in text
    assert f"{seconds / 3600:.1f} h of stage time, at least {seconds / 7200:.1f} h of wall time" in text


def test_the_newest_invocations_times_of_a_kind_replace_the_earlier_ones():
    """A stage made faster since (the grid's BLAS threads pinned): the newest invocation's measured
    times of its kind estimate it, not the time its own run measured before."""
    jobs = [job("a"), job("b"), job("c"), job("p", evaluate=PAPER)]
    earlier = {"a": {"evaluate": 300.0}, "b": {"evaluate": 500.0}, "p": {"evaluate": 250.0}}
    recent = {"c": {"evaluate": 100.0}}  # re-measured by this invocation: every-detector evaluations cost 100 s now
    pending = {name: ["evaluate"] for name in ("a", "b", "p")}
    rows = estimate(jobs, {"s": ["a", "b", "c", "p"]}, {**earlier, **recent}, pending, recent)
    # a and b: the recent median of their kind (100); p: no recent paper-three evaluation, its own 250
    assert rows["stages"]["evaluate"]["seconds"] == 100 + 100 + 250
