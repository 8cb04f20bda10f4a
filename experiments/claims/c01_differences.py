"""C1: under regular backdoor training the benign/malicious differences are large at every level
(paper §4, TABLE 2), and the TABLE 2 section of the report."""
from experiments.claim import Claim, Section, register
from experiments.records import Runs, aro_of, distance_of, fmt, mean_of, present
from experiments.rules import verdict_by_share
from experiments.tables import markdown_table
from metrics import METRICS
from models import LEVELS
from models import display_name as model_display

ABOVE = 2.0   # an ARO above this: the attack's distance beyond the intra-class one and, on average, the nearest class
# TABLE 2, CIFAR-10 columns (s1, s2, s3), for the architectures this grid trains.
PAPER_ARO = {("vgg11", "patched"): (2.67, 3.00, 2.67), ("vgg11", "blended"): (2.67, 2.67, 2.67),
             ("vgg11", "sig"): (2.67, 3.00, 3.00), ("vgg11", "warped"): (3.00, 3.00, 3.00),
             ("preactresnet18", "patched"): (2.67, 2.67, 2.00), ("preactresnet18", "blended"): (3.00, 2.67, 3.00),
             ("preactresnet18", "sig"): (3.00, 3.00, 2.00), ("preactresnet18", "warped"): (3.00, 3.00, 2.00)}


def rbt_aros(runs: Runs) -> list:
    return [a for a in (aro_of(rbt, lv) for _, _, rbt, _, _ in runs.cells() for lv in LEVELS) if a is not None]


def judge(runs: Runs) -> tuple:
    aros = rbt_aros(runs)
    above = sum(a > ABOVE for a in aros)
    top = sum(a == 3.0 for a in aros)
    intra = [all(distance_of(rbt, m, lv) > distance_of(rbt, m, lv, "intra") for m in METRICS)
             for _, _, rbt, _, _ in runs.cells() for lv in LEVELS
             if all(present(distance_of(rbt, m, lv), distance_of(rbt, m, lv, "intra")) for m in METRICS)]
    evidence = (f"RBT, every model × attack × level: ARO > 2.0 in {above}/{len(aros)} "
                f"({100 * above / max(len(aros), 1):.0f}%), = 3.0 in {top}/{len(aros)} "
                f"({100 * top / max(len(aros), 1):.0f}%); all three distances above the intra-class baseline in "
                f"{sum(intra)}/{len(intra)}")
    return verdict_by_share(above / len(aros) if aros else None, 0.9, 0.5), evidence


def cases(runs: Runs) -> list:
    return [float(a > ABOVE) for a in rbt_aros(runs)]


def section_table2(runs: Runs) -> list:
    """TABLE 2's ARO per model, attack and level under RBT and ML-MMDR, each the mean over the seeds'
    runs (a seed's ARO is itself a mean of three ranks, so seeds that agree give the paper's thirds)."""
    lines = ["## TABLE 2: ARO by model, attack and level", "",
             "ARO = the ascending rank of the benign/malicious distance among it, the intra-class and the nearest "
             "inter-class baseline, averaged over MMD², ED² and SWD₁ (3 = farther than the nearest other class); "
             "each value is the mean over the seeds' runs (seeds: RBT's / ML-MMDR's where they differ). "
             f"ML-MMDR at λ = {runs.lamb:g}; the paper's columns are its CIFAR-10 RBT values.", ""]
    by_cell = {}
    for model, attack, rbt, _, ml in runs.cells():
        by_cell.setdefault((model, attack), []).append((rbt, ml))
    rows = []
    for (model, attack), pairs in by_cell.items():
        paper = PAPER_ARO.get((model, attack), (None,) * 3)
        ml_seeds = sum(ml is not None for _, ml in pairs)  # fewer than RBT's while the grid runs
        seeds = str(len(pairs)) if ml_seeds == len(pairs) else f"{len(pairs)} / {ml_seeds}"
        rows.append([model_display(model), attack, seeds]
                    + [fmt(mean_of([aro_of(rbt, lv) for rbt, _ in pairs]), 2) for lv in LEVELS]
                    + [fmt(mean_of([aro_of(ml, lv) for _, ml in pairs]), 2) for lv in LEVELS]
                    + [fmt(v, 2) for v in paper])
    return lines + markdown_table(["model", "attack", "seeds"] + [f"RBT {lv}" for lv in LEVELS]
                                  + [f"ML-MMDR {lv}" for lv in LEVELS] + [f"paper {lv}" for lv in LEVELS], rows)


CLAIM = register(Claim(
    id="C1",
    statement="Under RBT the benign/malicious differences are large at all levels (TABLE 2)",
    paper="TABLE 2 (all models, both datasets): 95.8% of the ARO values above 2.0, 69.8% equal to 3.0",
    studies=("lambda", "model"),
    rule="reproduced if ≥ 90% of the RBT ARO values (model × attack × level) exceed 2.0 (the attack distance "
         "above the intra-class baseline and, on average over the metrics, beyond the nearest other class); "
         "partly if ≥ 50%",
    judge=judge, cases=cases,
    statistic="share of RBT ARO values above 2.0", margin="≥ 0.9 (reproduced), ≥ 0.5 (partly)", threshold=0.9,
    seed_sides={"reproduced": ("≥", 0.9), "partly reproduced": ("≥", 0.5), "not reproduced": ("<", 0.5)},
    checks="ED², SWD₁ and ARO are tested against direct formulas and hand-made values, and the evaluation's MMD² "
           "is tested to be the regulariser's GMK2 (tests/test_metrics.py); the intra-class baseline compares two "
           "disjoint halves of the same benign set, so it sits near the estimator's floor.",
    sections=(Section(10, lambda report: section_table2(report.runs)),)))
