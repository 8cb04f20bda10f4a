"""The report's sections for the questions beyond the paper's detectors and attacks: every registered
detector on RBT and ML-MMDR (C9), and the attacks built for inseparability, alone and stacked with
ML-MMDR (C10, C11). Each returns its lines (empty when the grid has nothing for it)."""
from defenses import DETECTORS, display_name
from experiments.claims_extended import (BASE_ATTACK, PRUNED_ASR, adaptive_runs, class_level_detectors,
                                         control_detectors, display_attack, flagged_count, later_detectors,
                                         mean_detection_f1, works)
from experiments.records import (Runs, class_statistic, detector_f1, fmt, mean_of, mean_sd, method_label_of, metric_of,
                                 model_display, separability_of)
from experiments.sections import figures_of, markdown_table
from models import LEVELS


def section_later_detectors(runs: Runs) -> list:
    cells = [(model, rbt, ml) for model, _, rbt, _, ml in runs.cells() if ml]
    if not cells:
        return []
    rows = []
    for model in dict.fromkeys(m for m, _, _ in cells):
        for name, index in (("RBT", 1), ("ML-MMDR", 2)):
            records = [cell[index] for cell in cells if cell[0] == model]
            rows.append([model_display(model), name]
                        + [mean_sd([detector_f1(r, d) for r in records]) for d in DETECTORS]
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
                               + "; " + _statistics(records, detector))
    return (["## Today's detectors (beyond the paper: C9)", "",
             f"F1 of every registered detector, mean ± sd over attacks and seeds (each cell's detector number: pool "
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
    import statistics

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
                    + [mean_sd([detector_f1(r, d) for r in p["records"]]) for d in DETECTORS])
    missed = _missed_by_threshold(points)
    return (["## Attacks built for inseparability (beyond the paper: C10, C11)", "",
             "Each attack at each poisoning rate under RBT and, where stacked, with ML-MMDR (λ = "
             f"{runs.lamb:g}); the rows at 10% of Patched and Blended are the λ sweep's. Mean ± sd over seeds; "
             "F1 = each registered detector's number as in C9, and its mean over detectors. A run whose ASR is "
             "below the working threshold is counted as failed, not as hidden.", ""]
            + markdown_table(["attack, rate", "method", "seeds", "BA", "ASR", "mean F1"]
                             + [display_name(d) for d in DETECTORS], rows)
            + ([""] + [f"Where a detector's own threshold misses inputs its score still ranks (F1 below "
                       f"{MISSED_F1:g} at its threshold, at least {RANKED_F1:g} at the best threshold on its score): "
                       + "; ".join(missed) + "." if missed else ""])
            + [""] + figures_of(figures, "detection against BA"))


MISSED_F1, RANKED_F1 = 0.2, 0.8  # "misses" and "still ranks": far apart, so neither reads as noise


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


def _first_below(curve: list):
    """(ratio, BA) of the first point of a curve where ASR < PRUNED_ASR, short of the whole layer."""
    point = next((p for p in curve if p["asr"] < PRUNED_ASR and p["ratio"] < 1.0), None)
    return (point["ratio"], point["ba"]) if point else (None, None)


def section_pruning_places(runs: Runs) -> list:
    """C8's diagnostic: where and by what the backdoor can be pruned, per model and method."""
    found = [r for r in runs.main() if r.get("prune_places")]
    if not found:
        return []
    variants = list(found[0]["prune_places"]["curves"])
    groups = {}
    for r in found:  # one row per model, method and λ: its spread is over seeds alone
        groups.setdefault((r["config"].model_name, method_label_of(r)), []).append(r)
    rows = []
    for (model, method), records in groups.items():
        cells = []
        for variant in variants:
            points = [_first_below(r["prune_places"]["curves"][variant]) for r in records]
            never = sum(ratio is None for ratio, _ in points)
            cells.append(f"{mean_sd([ratio for ratio, _ in points], 2)} (BA {mean_sd([ba for _, ba in points])})"
                         + (f", never in {never}/{len(points)}" if never else ""))
        negative = {place: mean_of([r["prune_places"]["places"][place]["negative_on_triggered"] for r in records])
                    for place in records[0]["prune_places"]["places"]}
        rows.append([model_display(model), method, len(records)] + cells
                    + [", ".join(f"{place} {fmt(share, 2)}" for place, share in negative.items())])
    modules = "; ".join(
        f"{model_display(model)}: " + ", ".join(f"{place} = {info['module']} ({info['hook']}, {info['channels']} "
                                                f"channels)" for place, info in records[0]["prune_places"]["places"].items())
        for (model, _), records in groups.items() if _ == "RBT")
    subset = found[0]["prune_places"]["subset"]
    first_curve = next(iter(found[0]["prune_places"]["curves"].values()))
    step = first_curve[1]["ratio"] - first_curve[0]["ratio"]  # coarser than the prune stage's: its ratios differ
    findings = []
    for model in dict.fromkeys(m for m, _ in groups):
        records = [r for (m, _), rs in groups.items() if m == model for r in rs]
        works = [v for v in variants if all(_first_below(r["prune_places"]["curves"][v])[0] is not None for r in records)]
        findings.append(f"{model_display(model)}: the backdoor is pruned out short of the whole layer on all "
                        f"{len(records)} runs by " + (", ".join(works) if works else "no place and ranking"))
    return (["### Where pruning removes the backdoor (C8's diagnostic)", "",
             f"Pruned ratio where ASR first falls below {PRUNED_ASR:g} short of the whole layer (mean ± sd over seeds) "
             f"and BA there, on a seeded {subset}-image test subset in steps of {step:.2g} of the channels, at two "
             "places × three rankings: the paper's "
             "(s3 by the mean activation on triggered inputs, largest first), by triggered − clean (Neural Cleanse's "
             "ranking), and by |mean activation on triggered inputs|. The places: " + modules + ". The last column: "
             "the share of each place's channels whose mean on triggered inputs is negative (a largest-first ranking "
             "prunes them last; after a ReLU there are none).", ""]
            + markdown_table(["model", "method", "runs"] + variants + ["negative on triggered"], rows)
            + ["", "Read from the table: " + "; ".join(findings) + "."])
