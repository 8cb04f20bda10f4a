"""C9 (beyond the paper): does ML-MMDR lower the detection of the detectors published since (SPECTRE,
SCAn, Beatrix) as it lowers AC's, SS's and SR's, with STRIP, which reads no representation, as the
control? And the report's section on every registered detector."""
from defenses import DETECTORS, display_name
from experiments.claim import NOT_IN_PAPER, Claim, RuleChange, Section, register, seed_unit_change
from evaluation.protocol import TRAINING_CLASS_DETECTORS
from experiments.records import (Runs, class_statistic, detector_f1, flagged_beyond_size, fmt, mean_of, mean_sd,
                                 present, scored, separability_of, target_flagged)
from experiments.rules import DETECTION_MARGIN, MIN_CASES, interval_text, seed_rule_text, tally
from experiments.tables import markdown_table
from metrics.intervals import NOT_MEASURABLE, paired_verdict
from models import LEVELS
from models import display_name as model_display


def later_detectors() -> tuple:
    """The detectors published after the paper that read representations (C9's subjects), TED's
    input-level ranks among them."""
    return tuple(name for name, d in DETECTORS.items() if not d.paper and d.latent)


def control_detectors() -> tuple:
    """Detectors that read no representation (STRIP, SCALE-UP, IBD-PSC): C9's controls."""
    return tuple(name for name, d in DETECTORS.items() if not d.latent)


def class_level_detectors() -> tuple:
    """The later detectors that judge classes (SCAn, Beatrix's class test): they flag a target or not."""
    return tuple(d for d in later_detectors() if DETECTORS[d].consumes == "classes")


def flagged_count(records: list, detector: str, levels=LEVELS) -> tuple:
    """(how often a class-level detector flagged the target, how often it ran) over records × levels."""
    hits = [target_flagged(r, detector, lv) for r in records for lv in levels]
    hits = [h for h in hits if h is not None]
    return sum(hits), len(hits)


def beyond_size(records: list, detector: str, levels=LEVELS) -> str:
    """', k of them beyond class size' where the records hold the size-only control: how many of the
    target's flags the control (same class counts, no poison) did not also raise."""
    found = [flagged_beyond_size(r, detector, lv) for r in records for lv in levels]
    found = [f for f in found if f is not None]
    return f", {sum(found)} of them beyond what class size alone gives" if found else ""


def _unchanged(cases: list) -> dict:
    """The control's rule: 'unchanged' when the whole t-interval over the seeds lies within
    ±DETECTION_MARGIN, 'changed' when it lies beyond it, else not established ('not measurable'
    below MIN_CASES)."""
    return paired_verdict(cases, DETECTION_MARGIN, MIN_CASES, "changed", "changed", "unchanged")


def _detector_differences(runs: Runs, detector: str) -> list:
    """(seed, RBT's minus ML-MMDR's F1) per cell: the seed is the unit the verdict's interval resamples."""
    return [(rbt["config"].seed, detector_f1(rbt, detector) - detector_f1(ml, detector)
             if present(detector_f1(rbt, detector), detector_f1(ml, detector)) else None)
            for _, _, rbt, _, ml in runs.cells() if ml]


def judge(runs: Runs) -> tuple:
    cells = [(rbt, ml) for _, _, rbt, _, ml in runs.cells() if ml]
    judged, parts = {}, []
    for detector in later_detectors() + tuple(d for d, x in DETECTORS.items() if x.paper):
        judged[detector] = paired_verdict(_detector_differences(runs, detector), DETECTION_MARGIN, MIN_CASES,
                                          "lowered", "raised", "not lowered")
    controls = {detector: _unchanged(_detector_differences(runs, detector)) for detector in control_detectors()}
    for detector, found in {**judged, **controls}.items():
        parts.append(f"{display_name(detector)}{' (control)' * (detector in controls)} "
                     f"{fmt(mean_of([detector_f1(r, detector) for r, _ in cells]))} → "
                     f"{fmt(mean_of([detector_f1(m, detector) for _, m in cells]))} ({found['verdict']}"
                     f"{interval_text(found)})")
    flagged = []
    for detector in class_level_detectors():
        for name, index in (("RBT", 0), ("ML-MMDR", 1)):
            hits, total = flagged_count([pair[index] for pair in cells], detector)
            if total:
                flagged.append(f"{display_name(detector)} flags the target under {name} in {hits}/{total} "
                               f"cell × level{beyond_size([pair[index] for pair in cells], detector)}")
    # the detectors read in their reference's regime, shown on the evaluation's pools too (not judged)
    pooled = [f"{display_name(detector)} on the evaluation's pools (not judged: outside its regime) "
              f"{fmt(mean_of([detector_f1(r, detector, protocol='pools') for r, _ in cells]))} → "
              f"{fmt(mean_of([detector_f1(m, detector, protocol='pools') for _, m in cells]))}"
              for detector in TRAINING_CLASS_DETECTORS if detector in later_detectors()]
    separability = "; ".join(
        f"{lv} {fmt(mean_of([separability_of(r, lv) for r, _ in cells]))} → "
        f"{fmt(mean_of([separability_of(m, lv) for _, m in cells]))}" for lv in LEVELS)
    # where the control moved, by attack: the reader can tell one attack's change from a general one
    by_attack = [f"{display_name(detector)} (control) by attack: " + ", ".join(
        f"{attack} {fmt(mean_of([detector_f1(r, detector) for r, _ in pairs]))} → "
        f"{fmt(mean_of([detector_f1(m, detector) for _, m in pairs]))}"
        for attack, pairs in _by_attack(runs).items()) for detector, found in controls.items()
        if found["verdict"] == "changed"]
    evidence = ("mean F1 RBT → ML-MMDR over models, attacks and seeds: " + "; ".join(parts)
                + (". " + "; ".join(flagged) if flagged else "") + (". " + "; ".join(pooled) if pooled else "")
                + (". " + "; ".join(by_attack) if by_attack else "")
                + f". Detector-free separability (5-fold linear SVM accuracy): {separability}")
    subjects = {d: judged[d]["verdict"] for d in later_detectors()}
    verdict = ("not measurable" if not subjects or all(v == NOT_MEASURABLE for v in subjects.values()) else
               f"of {len(subjects)} later detectors: {tally({d: judged[d] for d in subjects}, display_name)}"
               + "".join(f"; {display_name(d)} (control) {c['verdict']}" for d, c in controls.items()))
    return verdict, evidence


def _by_attack(runs: Runs) -> dict:
    """{attack: [(RBT record, ML-MMDR record)]} over the models and seeds of C9's cells."""
    found = {}
    for _, attack, rbt, _, ml in runs.cells():
        if ml:
            found.setdefault(attack, []).append((rbt, ml))
    return found


def cases(runs: Runs) -> list:
    return [d for detector in later_detectors() for _, d in _detector_differences(runs, detector)]


def section_later_detectors(runs: Runs) -> list:
    cells = [(model, rbt, ml) for model, _, rbt, _, ml in runs.cells() if ml]
    if not cells:
        return []
    rows = []
    for model in dict.fromkeys(m for m, _, _ in cells):
        for name, index in (("RBT", 1), ("ML-MMDR", 2)):
            records = [cell[index] for cell in cells if cell[0] == model]
            rows.append([model_display(model), name]
                        + [scored(records, d) for d in DETECTORS]
                        + [f"{fmt(mean_of([separability_of(r, lv) for r in records]))} / "
                           f"{fmt(mean_of([separability_of(r, lv, 'silhouette') for r in records]))}" for lv in LEVELS])
    flagged = []
    for model in dict.fromkeys(m for m, _, _ in cells):
        for detector in class_level_detectors():
            for name, index in (("RBT", 1), ("ML-MMDR", 2)):
                records = [cell[index] for cell in cells if cell[0] == model]
                counts = {lv: flagged_count(records, detector, (lv,)) for lv in LEVELS}
                flagged.append(f"{model_display(model)}, {display_name(detector)}, {name}: target flagged in "
                               + ", ".join(f"{lv} {hits}/{total}" for lv, (hits, total) in counts.items())
                               + beyond_size(records, detector) + "; " + _statistics(records, detector))
    return (["## Today's detectors (beyond the paper: C9)", "",
             f"F1 of every registered detector, mean ± sd over attacks and seeds, its threshold-free score beside it "
             f"(AUROC, or a class-level detector's target rank; none in evaluations before issue 44) (each cell's "
             f"detector number: pool "
             f"detectors' headline F1, mean over levels and pools; class-level detectors' F1 inside the target class "
             f"where they flag it, 0 where they do not), RBT against ML-MMDR at λ = {runs.lamb:g}. "
             + ", ".join(display_name(d) for d in later_detectors()) + " are the detectors published after the paper; "
             + ", ".join(display_name(d) for d in control_detectors()) + " reads inputs, not representations (the "
             "control). Separability: the detector-free 5-fold linear-SVM accuracy / silhouette of benign against "
             "malicious target representations.", ""]
            + markdown_table(["model", "method"] + [display_name(d) for d in DETECTORS]
                             + [f"separability {lv}" for lv in LEVELS], rows)
            + ([""] + ["Class-level verdicts: how often the target class was flagged, and the mean class "
                       "statistic of the target against the detector's threshold (with the largest other "
                       "class's), which tells a target hidden far below the threshold from one that barely "
                       "missed it."] + [f"- {line}" for line in flagged] if flagged else []))


def _statistics(records: list, detector: str) -> str:
    """Mean target and largest-other class statistics per level, with the threshold."""
    parts, threshold = [], None
    for level in LEVELS:
        target = [found for found in (class_statistic(r, detector, level) for r in records) if found]
        other = [found for found in (class_statistic(r, detector, level, target=False) for r in records) if found]
        if target:
            threshold = target[0][1]
            parts.append(f"{level} {fmt(mean_of([s for s, _ in target]), 2)} "
                         f"(other {fmt(mean_of([s for s, _ in other]), 2)})")
    return (f"target statistic against threshold {fmt(threshold, 2)}: " + ", ".join(parts)) if parts else "not run"


RULE = (f"per detector, over the (model, attack, seed) cells: RBT's minus ML-MMDR's F1 (pool detectors: the "
        f"headline, mean over levels and pools, except SPECTRE, read in its reference's regime: on the target class "
        f"of the whole poisoned training set, mean over levels; class-level detectors: the F1 inside the target "
        f"class where they flag it on the whole training set, 0 where they do not). "
        f"(Changed by issue 42, after v3's numbers: SPECTRE was read on the evaluation's pools, whose poisoned "
        f"share is 1/3 or 1/2, and SCAn and Beatrix's class test on 200 images per labelled class; v3's verdict "
        f"was SPECTRE not lowered, SCAn lowered, Beatrix lowered, Beatrix class test lowered.) (Widened by issue 44, before any of their numbers on the report's grid: "
        f"TED, which ranks representations at every layer, joins the subjects; "
        f"SCALE-UP and IBD-PSC, which read no representation, join STRIP as controls.) Per detector, "
        + seed_rule_text(DETECTION_MARGIN, "lowered", "raised", "not lowered")
        + f"; a control is 'unchanged' inside ±{DETECTION_MARGIN:g}, 'changed' beyond it; 'not measurable' below "
        f"{MIN_CASES} cells. The verdict counts detectors; it never averages them")

CLAIM = register(Claim(
    id="C9",
    statement="New: does ML-MMDR lower the detection of SPECTRE, SCAn, Beatrix and TED as it lowers AC's, SS's "
              "and SR's, with STRIP, SCALE-UP and IBD-PSC (no representation) unchanged?",
    paper=NOT_IN_PAPER,
    studies=("lambda", "model"),
    rule=RULE, judge=judge, cases=cases,
    statistic="RBT's minus ML-MMDR's F1, per cell × detector, pooled over " + ", ".join(
        display_name(d) for d in later_detectors()),
    margin=f"≥ {DETECTION_MARGIN:g}", threshold=DETECTION_MARGIN,
    history=(RuleChange("2026-12-07, commit 1537af6 (issue 42)", "SPECTRE read on the training set's target "
                        "class, SCAn and Beatrix's class test on the whole training set", True,
                        "SPECTRE on the evaluation's pools, SCAn and Beatrix's class test on 200 images per class",
                        "SPECTRE not lowered; SCAn lowered; Beatrix lowered; Beatrix class test lowered; STRIP "
                        "(control) changed"),
             RuleChange("2026-12-07, commits 5d1a3dc–c89f2fc (issue 44)", "widened, before any of their numbers: TED "
                        "and ASSET join the subjects, SCALE-UP, IBD-PSC and BaDExpert the controls (ASSET and "
                        "BaDExpert through the registry, unmarked until issue 45)", False,
                        "subjects SPECTRE, SCAn, Beatrix, Beatrix's class test; control STRIP", "as above"),
             seed_unit_change("SPECTRE not lowered (interval [+0.009, +0.059], which excludes 0); SCAn lowered; "
                              "Beatrix lowered; Beatrix class test lowered; STRIP (control) changed",
                              "; the verdict listed each detector")),
    checks="Each detector finds a planted group on separable synthetic data and falls to chance on identical "
           "distributions (tests/test_detection.py; SPECTRE, SCAn, Beatrix and STRIP in tests/test_spectre.py, "
           "tests/test_scan.py, tests/test_beatrix.py and tests/test_strip.py); STRIP, which reads no "
           "representation, is the control: a change there would point at the attack, not the representations.",
    sections=(Section(120, lambda report: section_later_detectors(report.runs)),)))
