"""C10 (beyond the paper): do the attacks built for latent inseparability (Adaptive-Blend,
Adaptive-Patch, TaCT) hide better than ML-MMDR? And the report's section and figure on those
attacks, alone and stacked with ML-MMDR (C11 judges the stacked ones)."""
import statistics

from attacks import display_name as display_attack
from defenses import DETECTORS, display_name
from experiments.adaptive import (ASR_WORKS, BASE_ATTACK, OTHER_CLASSES_FAIL, adaptive_runs, against,
                                  mean_detection_f1, mlmmdr_on, rate, summary, works)
from experiments.claim import NOT_IN_PAPER, Claim, Figure, RuleChange, Section, register, seed_unit_change
from experiments.records import Runs, detector_f1, fmt, mean_of, mean_sd, metric_of, scored
from experiments.rules import (DETECTION_MARGIN, MIN_CASES, by_detector, flattened, measured_tally, per_detector,
                               seed_rule_text)
from experiments.spread import NOT_RUN
from experiments.tables import figures_of, markdown_table
from visualization.claims import detection_ba_figure

MISSED_F1, RANKED_F1 = 0.2, 0.8  # "misses" and "still ranks": far apart, so neither reads as noise
FIGURE = "C10, C11: detection against BA"


def judge(runs: Runs) -> tuple:
    verdicts, evidence = [], []
    for (attack, ratio), records in adaptive_runs(runs, "RBT").items():
        judged = by_detector(against(records, lambda r: mlmmdr_on(runs, r)), "hides worse than ML-MMDR",
                             "hides better than ML-MMDR", "hides as ML-MMDR does")
        failed = [r for r in records if not works(r)]
        verdicts.append(f"{display_attack(attack)} at {rate(ratio)}: {measured_tally(judged, display_name, True)}"
                        + (f" ({len(failed)} of {len(records)} runs failed)" if failed else ""))
        evidence.append(f"{display_attack(attack)} at {rate(ratio)}: {summary(records)}; per detector: "
                        + per_detector(judged, display_name))
    baselines = {attack: [r for r in (runs.pick(m, attack, "ML-MMDR", seed=s) for s in runs.seeds()
                                      for m in runs.models()[:1]) if r and r["evaluation"]]
                 for attack in sorted(set(BASE_ATTACK.values()))}
    evidence += [f"ML-MMDR on {attack} at 10%: {summary(records)}" for attack, records in baselines.items() if records]
    best = _hides_best(runs, baselines) if verdicts else ""  # no adaptive run: nothing to compare
    if best:
        verdicts.append(f"hides best: {best}")
    return "; ".join(verdicts) or NOT_RUN, ". ".join(evidence) or "no adaptive run yet"


def _hides_best(runs: Runs, baselines: dict) -> str:
    """'<attack> (<method>, <rate>): F1 …, BA …, ASR …' of the lowest mean detection F1 among working runs."""
    candidates = {}
    for method in ("RBT", "ML-MMDR"):
        for (attack, ratio), records in adaptive_runs(runs, method).items():
            candidates[f"{display_attack(attack)} ({method}, {rate(ratio)})"] = records
    for attack, records in baselines.items():
        candidates[f"{display_attack(attack)} (ML-MMDR, 10%)"] = records
    scored = {name: mean_of([mean_detection_f1(r) for r in records if works(r)]) for name, records in candidates.items()}
    scored = {name: f1 for name, f1 in scored.items() if f1 is not None}
    if not scored:
        return ""
    name = min(scored, key=scored.get)
    return f"{name}: {summary([r for r in candidates[name] if works(r)])}"


def cases(runs: Runs) -> list:
    return [d for records in adaptive_runs(runs, "RBT").values()
            for d in flattened(against(records, lambda r: mlmmdr_on(runs, r)))]


def adaptive_points(runs: Runs) -> list:
    """One point per (attack, rate, method) of the adaptive study, and ML-MMDR on the attacks the
    adaptive ones reshape: {label, method, ba, ba_sd, f1, f1_sd, records}."""
    groups = {}
    for method in ("RBT", "ML-MMDR"):
        for (attack, ratio), records in adaptive_runs(runs, method).items():
            groups[(f"{display_attack(attack)} {100 * ratio:g}%", method)] = records
    model = next(iter(runs.models()), None)
    for attack in sorted(set(BASE_ATTACK.values())):
        for method in ("RBT", "ML-MMDR"):
            records = [r for r in (runs.pick(model, attack, method, seed=s) for s in runs.seeds())
                       if r and r["evaluation"]]
            if records:
                groups[(f"{display_attack(attack)} 10%", method)] = records
    points = []
    for (label, method), records in groups.items():
        ba = [metric_of(r, "ba") for r in records]
        f1 = [mean_detection_f1(r) for r in records]
        points.append({"label": label, "method": method, "ba": mean_of(ba), "f1": mean_of(f1),
                       "ba_sd": _sd(ba), "f1_sd": _sd(f1), "records": records})
    return [p for p in points if p["ba"] is not None and p["f1"] is not None]


def _sd(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else 0.0


def section_adaptive(runs: Runs, figures: dict) -> list:
    points = adaptive_points(runs)
    if not any(p["label"].split()[0] not in ("Patched", "Blended") for p in points):
        return []
    rows = []
    for p in points:
        failed = [r for r in p["records"] if not works(r)]
        rows.append([p["label"], p["method"], len(p["records"]), mean_sd([metric_of(r, "ba") for r in p["records"]]),
                     mean_sd([metric_of(r, "asr") for r in p["records"]])
                     + (f" ({len(failed)} failed)" if failed else ""), mean_sd([mean_detection_f1(r) for r in p["records"]])]
                    + [scored(p["records"], d) for d in DETECTORS])
    missed = _missed_by_threshold(points)
    return (["## Attacks built for inseparability (beyond the paper: C10, C11)", "",
             "Each attack at each poisoning rate under RBT and, where stacked, with ML-MMDR (λ = "
             f"{runs.lamb:g}); the rows at 10% of Patched and Blended are the λ sweep's. Mean ± sd over seeds; "
             "F1 = each registered detector's number as in C9 (its AUROC or target rank beside it), and its mean over "
             "detectors, shown, never judged. A run whose ASR is "
             "below the working threshold is counted as failed, not as hidden.", ""]
            + markdown_table(["attack, rate", "method", "seeds", "BA", "ASR", "mean F1"]
                             + [display_name(d) for d in DETECTORS], rows)
            + ([""] + [f"Where a detector's own threshold misses inputs its score still ranks (F1 below "
                       f"{MISSED_F1:g} at its threshold, at least {RANKED_F1:g} at the best threshold on its score): "
                       + "; ".join(missed) + "." if missed else ""])
            + [""] + figures_of(figures, "detection against BA"))


def _missed_by_threshold(points: list) -> list:
    """Each (attack, method, detector) whose threshold flags almost none of the poisoned inputs
    although its score separates them: the threshold, not the score, fails there. STRIP on TaCT is
    the case: superimposed on other classes' images, a trigger that works only on its source
    classes leaves fewer blends on the target than a patch does, so the poisoned inputs' entropy
    sits below the clean ones' yet above the 1% false-rejection threshold."""
    found = []
    for p in points:
        for detector in DETECTORS:
            own = mean_of([detector_f1(r, detector) for r in p["records"]])
            best = mean_of([detector_f1(r, detector, rule="oracle") for r in p["records"]])
            if own is not None and best is not None and own < MISSED_F1 and best >= RANKED_F1:
                found.append(f"{p['label']} {p['method']}, {display_name(detector)} {fmt(own)} at its threshold, "
                             f"{fmt(best)} at the best one")
    return found


def rule(runs: Runs) -> str:
    return (f"for each adaptive attack and poisoning rate, per (seed, registered detector): its F1 under RBT, trained "
            f"as its authors published it, minus ML-MMDR's (λ = {runs.lamb:g}, mean of the working Blended and "
            f"Patched runs of the same seed at the same poisoning rate). Each detector is judged on its own, and the "
            f"verdict counts detectors (never their mean): " + seed_rule_text(DETECTION_MARGIN, "hides worse",
                                                                                "hides better", "hides as ML-MMDR does")
            + f"; a run whose ASR is below {ASR_WORKS:g}, or (TaCT) whose trigger fires on "
            f"more than {OTHER_CLASSES_FAIL:g} of any other class's images, failed and counts in no comparison; "
            f"'not measurable' below {MIN_CASES} cases. 'Hides best' = the lowest mean F1 over detectors among the "
            f"working attacks. (Changed by issue 42, before its runs: the adaptive attacks were trained with "
            f"Algorithm 1's split loss and gathered batches, compared with ML-MMDR at 10% whatever their rate, and "
            f"TaCT firing on other classes still counted as working. Changed again by issue 42, after the Fashion-MNIST "
            f"seed-0 runs: TaCT failed when more than {OTHER_CLASSES_FAIL:g} of the other classes' images taken "
            f"together fired; its ML-MMDR run at 0.3% fired on 0.18 of them, 0.95 of one class's, and counted as "
            f"working.)")


CLAIM = register(Claim(
    id="C10",
    statement="New: do the attacks built for latent inseparability (Adaptive-Blend, Adaptive-Patch, TaCT) "
              "hide better than ML-MMDR?",
    paper=NOT_IN_PAPER,
    studies=("adaptive", "lambda"),
    rule=rule, judge=judge, cases=cases,
    statistic="an adaptive attack's (RBT) minus ML-MMDR's F1, per seed × detector",
    margin=f"≤ −{DETECTION_MARGIN:g} (hides better)", threshold=-DETECTION_MARGIN, by_seed=False,
    history=(RuleChange("2026-12-07, commit b0fd389 (issue 42)", "attacks trained as their authors published "
                        "them, ML-MMDR compared at the same poisoning rate, TaCT firing on other classes failed "
                        "(before the rerun, after v3's numbers)", True,
                        "adaptive attacks trained with Algorithm 1's loss and batching, compared with ML-MMDR at 10%",
                        "every attack at every rate 'hides worse than ML-MMDR', except TaCT at 0.3% 'hides as ML-MMDR "
                        "does'"),
             seed_unit_change("every attack at every rate 'hides worse than ML-MMDR', except TaCT at 0.3% 'hides as "
                              "ML-MMDR does'",
                              ", over seeds × detectors: one verdict per attack and rate on F1 averaged over every "
                              "detector")),
    checks="Each adaptive attack's trigger, cover images and test-time trigger are tested pixel by pixel against "
           "the reference's construction (tests/test_attacks.py); a run whose ASR is below "
           f"{ASR_WORKS:g} is reported as a failed attack, never as a hidden one.",
    sections=(Section(130, lambda report: section_adaptive(report.runs, report.figures)),),
    figures=(Figure(FIGURE, "adaptive_detection_ba.png",
                    lambda runs, path: detection_ba_figure(adaptive_points(runs), path), study="adaptive"),)))
