"""C3: SL-MMDR, the MMD at the last level alone, leaves s1 and s2 detectable (paper §5, §6.1)."""
from defenses import PAPER_DETECTORS, display_name
from experiments.claim import Claim, register
from experiments.records import Runs, aro_of, f1_of, fmt, mean_of, median_of, mmd_ratio_of, present
from experiments.rules import cells_difference, verdict_by_share
from models import LEVELS

EARLY = ("s1", "s2")
MARGIN = 0.1   # SL-MMDR's mean F1 at s1/s2 above ML-MMDR's by at least this


def early_f1(record):
    """Mean headline F1 of the paper's detectors at s1 and s2."""
    return mean_of([f1_of(record, d, lv) for d in PAPER_DETECTORS for lv in EARLY]) if record else None


def judge(runs: Runs) -> tuple:
    cells = [(rbt, sl, ml) for _, _, rbt, sl, ml in runs.cells() if sl and ml]
    sl_early = mean_of([f1_of(sl, d, lv) for _, sl, _ in cells for d in PAPER_DETECTORS for lv in EARLY])
    ml_early = mean_of([f1_of(ml, d, lv) for _, _, ml in cells for d in PAPER_DETECTORS for lv in EARLY])
    sl_ratio = {lv: median_of([mmd_ratio_of(sl, rbt, lv) for rbt, sl, _ in cells]) for lv in LEVELS}
    sl_aro = [mean_of([aro_of(sl, lv) for _, sl, _ in cells]) for lv in LEVELS]
    first = {d: mean_of([f1_of(sl, d, "s1", size=500, ratio=1.0) for _, sl, _ in cells]) for d in PAPER_DETECTORS}
    measurable = present(sl_early, ml_early, *sl_ratio.values())
    conditions = [measurable and sl_early - ml_early >= MARGIN,
                  measurable and min(sl_ratio["s1"], sl_ratio["s2"]) > sl_ratio["s3"]]
    evidence = (f"mean headline F1 at s1/s2: SL-MMDR {fmt(sl_early)}, ML-MMDR {fmt(ml_early)}; SL-MMDR's MMD² over "
                f"RBT's, median: " + " / ".join(fmt(sl_ratio[lv], 2) for lv in LEVELS)
                + "; SL-MMDR's mean ARO " + " / ".join(fmt(a, 2) for a in sl_aro)
                + "; F1 at s1, N = 500, r′ = 1: " + ", ".join(f"{display_name(d)} {fmt(v)}" for d, v in first.items()))
    return verdict_by_share(sum(conditions) / 2 if measurable else None), evidence


def cases(runs: Runs) -> list:
    return cells_difference(runs, early_f1, "SL-MMDR", "ML-MMDR")


CLAIM = register(Claim(
    id="C3",
    statement="SL-MMDR (last level only) leaves s1 and s2 detectable (§5, §6.1)",
    paper="§5: SL-MMDR's mean ARO 2.833 / 2.25 / 2.0 (CIFAR-10, λ = 0.3); §6.1: AC, SS, SR F1 at the first "
          "level 0.962, 0.985, 0.867 ({CIFAR-10, P-18}, N = 500, r′ = 1)",
    studies=("lambda", "model"),
    rule="two conditions: SL-MMDR's mean F1 at s1/s2 exceeds ML-MMDR's by ≥ 0.1, and SL-MMDR lowers MMD² less "
         "at s1 and s2 than at s3; reproduced if both, partly if one",
    judge=judge, cases=cases,
    statistic="SL-MMDR's minus ML-MMDR's mean F1 at s1/s2, per model × attack", margin="≥ 0.1", threshold=MARGIN,
    seed_sides={"reproduced": ("≥", MARGIN)},
    checks="SL-MMDR differs from ML-MMDR only in its levels (tests/test_models.py checks every model's tapped modules "
           "and shapes); the detection F1s come from the same detectors as C4's."))
