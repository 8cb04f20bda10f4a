"""C12 (beyond the paper): the reduction methods the paper argues against. Does its claim, that a
regulariser at the last hidden layer alone is "not sufficient" (§2, §5, §6.1), hold of the methods
it names, [21]'s adversarial embedding and [22]'s sliced Wasserstein term, which it never runs? And
is it the level or the distance that hides: each regulariser at the last level and at every level."""
from defenses import DETECTORS
from experiments.claim import NOT_IN_PAPER, Claim, Section, register
from experiments.regularized import differences, every_detector, regularizers, shown, table
from experiments.records import Runs
from experiments.rules import DETECTION_MARGIN, by_detector, flattened, measured_tally, per_detector, seed_rule_text
from experiments.spread import NOT_RUN
from experiments.tables import markdown_table

LEVEL = ("every level hides better", "the last level hides better", "the level makes no difference")
DISTANCE = ("hides worse than ML-MMDR", "hides better than ML-MMDR", "hides as ML-MMDR does")


def judge(runs: Runs) -> tuple:
    pairs = regularizers(runs)
    if not pairs:
        return NOT_RUN, "no regularizers-study run yet"
    verdicts, evidence = [], []
    for name, single, multi in pairs:
        judged = by_detector(differences(runs, single, multi, every_detector()), *LEVEL)
        verdicts.append(f"{single} → {multi}: {measured_tally(judged, shown)}")
        evidence.append(f"{single} minus {multi}: {per_detector(judged, shown)}")
    for name, _, multi in pairs:
        if multi != "ML-MMDR":
            judged = by_detector(differences(runs, multi, "ML-MMDR", every_detector()), *DISTANCE)
            verdicts.append(f"{multi}: {measured_tally(judged, shown)}")
    return "; ".join(verdicts), ". ".join(evidence)


def cases(runs: Runs) -> list:
    """F1 differences only: the linear SVM's accuracy, judged beside them, is another quantity."""
    return [d for _, single, multi in regularizers(runs)
            for d in flattened(differences(runs, single, multi, tuple(DETECTORS)))]


def section_reduction_methods(runs: Runs) -> list:
    header, rows = table(runs, every_detector())
    if len(header) < 2:
        return []
    return (["## The reduction methods, at one level and at every level (beyond the paper: C12, C13)", "",
             "Each detector's number per method, mean ± sd over the study's attacks and seeds (F1 under the "
             "detector's own rule, as in C9), its threshold-free score beside it (AUROC of its per-sample "
             "scores, or for a class-level detector the target class's rank, 1 = most anomalous); the last row "
             "is the detector-free 5-fold linear-SVM accuracy of benign against malicious target "
             "representations, mean over s1–s3. docs/methods/reduction-methods.md says what each method is "
             "and its weight.", ""] + markdown_table(header, rows))


RULE = ("per regulariser (MMD², [21]'s adversarial embedding, [22]'s sliced Wasserstein term, each at the weight the "
        "grid gives it, the same at both levels) and per registered detector and the linear-SVM separability, over "
        "the (attack, seed) cells: the last level's number minus every level's. "
        + seed_rule_text(DETECTION_MARGIN, LEVEL[0], LEVEL[1], LEVEL[2])
        + ". The paper's claim holds of a method where every level hides better for the detectors. The distance: "
        "each regulariser at every level minus ML-MMDR, judged alike. The verdict counts detectors; it never "
        "averages them")

CLAIM = register(Claim(
    id="C12",
    statement="New: does the paper's case against last-level regularisation hold of the methods it names ([21], "
              "[22]), and is it the level or the distance that hides?",
    paper=NOT_IN_PAPER,
    studies=("regularizers",),
    rule=RULE, judge=judge, cases=cases,
    statistic="a regulariser's last level minus its every level, F1 per seed × detector",
    margin=f"≥ {DETECTION_MARGIN:g} (every level hides better)", threshold=DETECTION_MARGIN, by_seed=False,
    checks="Each regulariser's loss is tested against a direct formula on small tensors, the adversarial term's "
           "gradient against the discriminator's confusion, and a resumed adversarial-embedding run against an "
           "uninterrupted one (tests/test_regularizers.py); a run whose BA or ASR falls is shown in the table.",
    sections=(Section(135, lambda report: section_reduction_methods(report.runs)),)))
