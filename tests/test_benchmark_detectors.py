"""benchmarks/detectors.py: every registered detector's seconds on a trained run, with the paper's three
apart, and a shrink of the defaults (--eval_flags) recorded as such."""
import json

from benchmarks import detectors as benchmark
from defenses import DETECTORS, PAPER_DETECTORS
from pipeline.cli import run_cli
from tests.conftest import EVAL_SMALL

POOL_FLAGS = ("--pool_sizes", "--pool_ratios")


def protocol_flags() -> list:
    """EVAL_SMALL without its pool flags, which the benchmark takes as its own."""
    flags, skip = [], False
    for index, flag in enumerate(EVAL_SMALL):
        if skip:
            skip = False
            continue
        if flag in POOL_FLAGS:
            skip = True
            continue
        flags.append(flag)
    return flags


def test_the_benchmark_times_every_registered_detector_and_records_its_shrink(tiny_run, capsys):
    _, run_dir = tiny_run
    shrink = " ".join(protocol_flags())
    argv = ["--run_dir", str(run_dir), "--threads", "1", "--pool_sizes", "40", "--pool_ratios", "1.0",
            "--eval_flags", shrink]
    assert run_cli(benchmark.main, argv) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["shrunk"] == shrink and found["pools"] == {"N": [40], "ratio": [1.0]}
    scored = set(found["headline_f1_auroc"]) | set(found["class_level_f1_in_target_rank"])
    assert set(found["detector_s"]) == set(DETECTORS) == scored
    assert set(found["class_level_f1_in_target_rank"]) == {d for d in DETECTORS if DETECTORS[d].consumes == "classes"}
    assert found["ratio"] == round(found["evaluate_s_every_detector"] / found["evaluate_s_paper_detectors"], 2)
    assert set(PAPER_DETECTORS) < set(found["detector_s"])


def test_a_bad_shrink_is_one_line_naming_the_flag(tiny_run, capsys):
    _, run_dir = tiny_run
    for flags, named in (("--strip_n many", "--strip_n"), ("--detectors ac --strip_n 10", "--detectors"),
                         ("--pool_sizes 50", "--pool_sizes")):
        assert run_cli(benchmark.main, ["--run_dir", str(run_dir), "--eval_flags", flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --eval_flags") and named in err[0]
