"""experiments/reproduce.py: the grid, the verdict rules, and a tiny end-to-end run that resumes."""
import json

from experiments.grid import Grid
from experiments.report import claims
from experiments.reproduce import main as reproduce_main
from tests.conftest import EVAL_SMALL
from pipeline.cli import run_cli
from pipeline.config import RunConfig


def test_grid_is_attacks_times_methods_times_lambdas():
    grid = Grid(base=RunConfig(data_name="digits", out_dir="x"), lambdas=(0.1, 0.3))
    names = [config.run_name for config in grid.runs()]
    assert len(names) == 4 * (1 + 2 * 2) and len(set(names)) == len(names)
    assert names[:5] == ["digits_vgg11_patched", "digits_vgg11_patched_mlmmdr_0.1_last",
                         "digits_vgg11_patched_mlmmdr_0.3_last", "digits_vgg11_patched_mlmmdr_0.1_all",
                         "digits_vgg11_patched_mlmmdr_0.3_all"]
    erasing = ["finetune", "nad", "argd"]  # on RBT and the largest-λ ML-MMDR run of every attack
    assert [name for name, _ in grid.stages(grid.runs()[0])] == ["train", "evaluate", "nc", "prune"] + erasing
    assert [name for name, _ in grid.stages(grid.runs()[1])] == ["train", "evaluate", "nc", "prune"]  # SL-MMDR
    assert [name for name, _ in grid.stages(grid.runs()[3])] == ["train", "evaluate", "nc", "prune"]  # ML-MMDR λ=0.1
    assert [name for name, _ in grid.stages(grid.runs()[4])] == ["train", "evaluate", "nc", "prune"] + erasing
    assert [name for name, _ in grid.stages(grid.runs()[5])] == ["train", "evaluate"] + erasing  # blended: not defended


def record(method, lamb, mmd, intra, f1, ba=0.9, asr=1.0, flagged=None):
    layer = "last" if method == "SL-MMDR" else "all"
    config = RunConfig(data_name="digits", attack_name="patched", mlmmdr_lamb=lamb, mlmmdr_layer=layer)
    levels = {lv: {m: {"attack": mmd[i], "intra": intra, "inter": 10.0} for m in ("mmd2", "ed2", "swd1")}
              for i, lv in enumerate(("s1", "s2", "s3"))}
    pool = {"levels": {lv: {d: {"headline": f1[i], "oracle": f1[i], "own": f1[i]} for d in ("ac", "ss", "sr")}
                       for i, lv in enumerate(("s1", "s2", "s3"))}}
    # singled out: the target's norm is the smallest and a tenth of the others'; otherwise third smallest
    norms = [1.0] + [10.0] * 9 if flagged else [10.0, 5.0, 6.0] + [20.0] * 7
    nc = None if flagged is None else {"norms": norms, "target_anomaly_index": 3.0, "flagged": [0]}
    return {"config": config, "metrics": {"ba": ba, "asr": asr}, "nc": nc, "prune": None,
            "evaluation": {"distances": {"levels": levels, "aro": {"s1": 3, "s2": 3, "s3": 3}},
                           "detection": {"pools": [pool]}}}


def test_claim_verdicts_follow_their_rules():
    records = [record("RBT", 0, [4.0, 4.0, 4.0], 0.5, [1.0, 1.0, 1.0], flagged=True),
               record("SL-MMDR", 0.3, [3.5, 3.0, 0.5], 0.5, [1.0, 1.0, 0.6]),
               record("ML-MMDR", 0.3, [1.0, 1.0, 1.0], 0.5, [0.6, 0.6, 0.6], ba=0.89, flagged=True)]
    verdicts = {claim.split(" (")[0].split(":")[0]: verdict for claim, verdict, _, _ in claims(records, 0.3)}
    assert verdicts == {"ML-MMDR keeps the attack": "reproduced",
                        "Under RBT the benign/malicious differences are large at all levels": "reproduced",
                        "ML-MMDR": "reproduced",
                        "SL-MMDR": "reproduced",
                        "Detection F1": "reproduced",
                        "Neural Cleanse still singles out the target by its ℓ1 norm under ML-MMDR": "reproduced"}
    records[2] = record("ML-MMDR", 0.3, [5.0, 5.0, 5.0], 0.5, [1.0, 1.0, 1.0], ba=0.5, flagged=False)
    verdicts = [verdict for _, verdict, _, _ in claims(records, 0.3)]
    assert verdicts == ["not reproduced", "reproduced", "not reproduced", "partly reproduced", "not reproduced",
                        "not reproduced"]


def test_tiny_reproduction_writes_a_report_and_resumes(tmp_path):
    argv = ["--data_name", "digits", "--width", "0.125", "--train_subset", "300", "--epochs", "2",
            "--lambdas", "0.3", "--attacks", "patched", "--defended_attacks", "--eval_flags", " ".join(EVAL_SMALL),
            "--erase_flags", "--teacher_epochs 1 --ft_epochs 1 --nad_epochs 1 --argd_epochs 1",
            "--out_dir", str(tmp_path / "runs"), "--figure_dir", str(tmp_path / "figs"),
            "--report", str(tmp_path / "REPRODUCTION.md")]
    assert run_cli(reproduce_main, argv) == 0
    report = (tmp_path / "REPRODUCTION.md").read_text()
    assert "## Claims" in report and "| patched | " in report and "![patched: sweep](figs/digits_vgg11_patched/sweep.png)" in report
    timings = json.loads((tmp_path / "runs" / "timings.json").read_text())
    assert sorted(timings) == ["digits_vgg11_patched_mlmmdr_0.3_all_w0.125_n300",
                               "digits_vgg11_patched_mlmmdr_0.3_last_w0.125_n300", "digits_vgg11_patched_w0.125_n300"]
    erased = {"train", "evaluate", "finetune", "nad", "argd"}
    assert [set(timings[name]) for name in sorted(timings)] == [erased, {"train", "evaluate"}, erased]
    assert (tmp_path / "figs" / "digits_vgg11_patched" / "erasing.png").is_file()
    model = tmp_path / "runs" / "digits_vgg11_patched_w0.125_n300" / "model.pt"
    stamp = model.stat().st_mtime_ns
    assert run_cli(reproduce_main, argv) == 0  # resumes: nothing is retrained
    assert model.stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "runs" / "timings.json").read_text()) == timings


def test_a_finished_grid_rerun_with_another_schedule_retrains(tmp_path):
    """Stages whose recorded inputs differ are rerun: --epochs 2 after --epochs 1 retrains and
    re-evaluates instead of reporting the old models under the new settings."""
    argv = ["--data_name", "digits", "--width", "0.125", "--train_subset", "200", "--epochs", "1",
            "--lambdas", "0.3", "--attacks", "patched", "--defended_attacks", "--erased_attacks",
            "--eval_flags", " ".join(EVAL_SMALL),
            "--out_dir", str(tmp_path / "runs"), "--figure_dir", str(tmp_path / "figs"),
            "--report", str(tmp_path / "R.md")]
    grid_runs = ["digits_vgg11_patched_w0.125_n200", "digits_vgg11_patched_mlmmdr_0.3_last_w0.125_n200",
                 "digits_vgg11_patched_mlmmdr_0.3_all_w0.125_n200"]
    assert run_cli(reproduce_main, argv) == 0
    run = tmp_path / "runs" / grid_runs[0]
    first = json.loads((run / "evaluation.json").read_text())["inputs_hash"]
    argv[argv.index("--epochs") + 1] = "2"
    assert run_cli(reproduce_main, argv) == 0
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert json.loads((run / "evaluation.json").read_text())["inputs_hash"] != first
    assert "- epochs: 2" in (tmp_path / "R.md").read_text()
