"""C13 (beyond the paper): do ML-MMDR, and the other reduction methods, lower the detection of the
detectors published from 2023 on (TED, IBD-PSC, SCALE-UP, BaDExpert, ASSET, Beatrix) as they lower
AC's, SS's and SR's?"""
from defenses import DETECTORS, PAPER_DETECTORS
from experiments.claim import NOT_IN_PAPER, Claim, register
from experiments.records import Runs
from experiments.regularized import differences, methods, shown
from experiments.rules import DETECTION_MARGIN, by_detector, flattened, measured_tally, per_detector, seed_rule_text
from experiments.spread import NOT_RUN

SINCE = 2023
VERDICTS = ("lowered", "raised", "not lowered")


def recent_detectors() -> tuple:
    """The registered detectors published from SINCE on, as their source names the year."""
    return tuple(name for name, d in DETECTORS.items() if d.year is not None and d.year >= SINCE)


def judge(runs: Runs) -> tuple:
    regularized = [label for label in methods(runs) if label != "RBT"]
    if "RBT" not in methods(runs) or not regularized:
        return NOT_RUN, "no regularizers-study run yet"
    verdicts, evidence = [], []
    for label in regularized:
        recent = by_detector(differences(runs, "RBT", label, recent_detectors()), *VERDICTS)
        paper = by_detector(differences(runs, "RBT", label, PAPER_DETECTORS), *VERDICTS)
        verdicts.append(f"{label}: since {SINCE}, {measured_tally(recent, shown)}; the paper's three, "
                        f"{measured_tally(paper, shown)}")
        evidence.append(f"RBT minus {label}: {per_detector({**recent, **paper}, shown)}")
    return "; ".join(verdicts), ". ".join(evidence)


def cases(runs: Runs) -> list:
    return [d for label in methods(runs) if label != "RBT"
            for d in flattened(differences(runs, "RBT", label, recent_detectors()))]


CLAIM = register(Claim(
    id="C13",
    statement=f"New: do ML-MMDR and the other reduction methods lower the detection of the detectors published "
              f"since {SINCE} as they lower AC's, SS's and SR's?",
    paper=NOT_IN_PAPER,
    studies=("regularizers",),
    rule=(f"per method of the regularizers study (each regulariser at the last level and at every level) and per "
          f"detector published from {SINCE} on, and beside them AC, SS and SR, over the (attack, seed) cells: RBT's "
          f"F1 minus the method's. " + seed_rule_text(DETECTION_MARGIN, *VERDICTS)
          + ". The verdict counts detectors; it never averages them"),
    judge=judge, cases=cases,
    statistic=f"RBT's minus a method's F1, per seed × detector published since {SINCE}",
    margin=f"≥ {DETECTION_MARGIN:g} (lowered)", threshold=DETECTION_MARGIN, by_seed=False,
    checks="Each detector has a known-answer test: a planted population it must find and a clean case it must "
           "not flag (tests/test_ted.py, test_ibd_psc.py, test_scale_up.py, test_badexpert.py, test_asset.py, "
           "test_beatrix.py); the regularizers study's table (C12's section) shows every number the verdict reads."))
