"""The claims C8–C11 of REPRODUCTION.md: the paper's pruning statement (§6.2) under a rule, and
what the paper could not ask: ML-MMDR against the detectors published since (C9), against the
attacks built for the same goal (C10), and stacked on one of them (C11).

Each rule is fixed here and printed beside its verdict. Every paired rule is
``metrics.intervals.paired_verdict``: a mean difference beyond the margin whose 95% bootstrap
interval excludes 0, with a minimum number of usable cases.
"""
from defenses import DETECTORS, display_name
from experiments.claims import Claim, Judged
from experiments.records import (Runs, detector_f1, fmt, mean_of, mean_sd, metric_of, model_display, present,
                                 separability_of, target_flagged)
from experiments.spread import NOT_RUN
from metrics.intervals import NOT_MEASURABLE, paired_verdict
from models import LEVELS

PRUNED_ASR = 0.2       # C8: pruning removed the backdoor once ASR is below this …
PRUNE_MARGIN = 0.05    # … and ML-MMDR "needs more pruning" by at least one step of the 5% grid
MIN_PRUNE_PAIRS = 3
DETECTION_MARGIN = 0.1  # C9–C11: a difference in detection F1 that counts
MIN_CASES = 3
ASR_WORKS = 0.8         # C10, C11: an attack whose ASR is below this hides nothing: it failed
# the attack whose trigger an adaptive attack reshapes: C10 and C11 compare with ML-MMDR on it
BASE_ATTACK = {"adaptive_blend": "blended", "adaptive_patch": "patched", "tact": "patched"}

PAPER = {
    "c8": "§6.2, Fig. 10: 'the performance of the neuron pruning is reduced on the models trained with ML-MMDR "
          "compared to on the models trained with RBT' (no number in the text)",
    "new": "not in the paper",
}
CHECKS = {
    "C8": "The pruning mask is tested to zero exactly the ranked channels of the tapped module and to leave the "
          "model's weights untouched, and both rankings are tested on known activations (tests/test_defend.py); "
          "the pruning section shows which tensor each architecture prunes and the curves of the alternatives.",
    "C9": "Each detector finds a planted group on separable synthetic data and falls to chance on identical "
          "distributions (tests/test_detection.py, tests/test_detectors.py); STRIP, which reads no "
          "representation, is the control: a change there would point at the attack, not the representations.",
    "C10": "Each adaptive attack's trigger, cover images and test-time trigger are tested pixel by pixel against "
           "the reference's construction (tests/test_attacks.py); a run whose ASR is below "
           f"{ASR_WORKS:g} is reported as a failed attack, never as a hidden one.",
    "C11": "As C10; the stacked run differs from the adaptive attack alone only in λ (its run name says so).",
}


# C8 is judged where the paper prunes (the s3 tap, the prune stage's curve) and, beside it, at the
# input of the last convolution (the diagnostic's curve, same ranking): after a ReLU in every model,
# the place Neural Cleanse and fine-pruning prune; for App. A's PreActResNet-18 it differs from s3
PLACES = {"s3": lambda r: (r.get("prune") or {}).get("curve"),
          "the last convolution's input": lambda r: (r.get("prune_places") or {}).get("curves", {}).get(
              "last_conv_input/triggered")}


def pruning_point(prune):
    """The first point of a pruning curve (a prune result) where ASR is below PRUNED_ASR, or None."""
    return _first_point(prune["curve"]) if prune else None


def _first_point(curve):
    return next((p for p in curve if p["asr"] < PRUNED_ASR), None) if curve else None


def _short_of_the_layer(curve):
    point = _first_point(curve)
    return point if point and point["ratio"] < 1.0 else None


def prune_pairs(runs: Runs, place: str = "s3") -> list:
    """[(model, seed, RBT record, ML-MMDR record)] where both runs have a pruning curve at ``place``, at
    the claims' λ."""
    pairs = []
    for seed in runs.seeds():
        for model in runs.models():
            for attack in runs.attacks(model):
                rbt, ml = runs.pick(model, attack, "RBT", seed=seed), runs.pick(model, attack, "ML-MMDR", seed=seed)
                if rbt and ml and PLACES[place](rbt) and PLACES[place](ml):
                    pairs.append((model, seed, rbt, ml))
    return pairs


def pruning_difference(rbt, ml, place: str = "s3"):
    """ML-MMDR's pruned ratio where ASR < PRUNED_ASR minus RBT's at ``place``; None when either needed
    the whole layer (the output is then a constant: no ratio that removes the backdoor and keeps a model)."""
    a, b = _short_of_the_layer(PLACES[place](rbt)), _short_of_the_layer(PLACES[place](ml))
    return b["ratio"] - a["ratio"] if a and b else None


def _judge_pruning(pairs: list, place: str) -> tuple:
    """(verdict, evidence) of C8's rule on ``pairs`` at ``place``."""
    found = paired_verdict([pruning_difference(rbt, ml, place) for rbt, ml in pairs], PRUNE_MARGIN, MIN_PRUNE_PAIRS,
                           "reproduced: ML-MMDR needs more pruning", "not reproduced: ML-MMDR needs less pruning",
                           "not reproduced: no consistent difference")
    points = {name: [_first_point(PLACES[place](r)) for r in records] for name, records in
              (("RBT", [p[0] for p in pairs]), ("ML-MMDR", [p[1] for p in pairs]))}
    whole = sum(1 for rbt, ml in pairs if pruning_difference(rbt, ml, place) is None)
    evidence = (f"at {place}, {len(pairs)} pairs, {len(pairs) - whole} usable: pruned ratio where ASR < "
                f"{PRUNED_ASR:g}: " + "; ".join(
                    f"{name} {mean_sd([p['ratio'] if p else None for p in found_points], 2)} (BA there "
                    f"{mean_sd([p['ba'] if p else None for p in found_points])})" for name, found_points in points.items())
                + (_interval_text(found) if found["mean"] is not None else "")
                + (f"; {whole} pair{'s' * (whole != 1)} unusable: on one run ASR fell below {PRUNED_ASR:g} only with the "
                   f"whole layer pruned, or never" if whole else ""))
    return found["verdict"], evidence


def claim_pruning(runs: Runs) -> Claim:
    verdicts, evidence = [], []
    for model in runs.models():
        parts = {}
        for place in PLACES:
            pairs = [(rbt, ml) for m, _, rbt, ml in prune_pairs(runs, place) if m == model]
            if pairs:
                parts[place] = _judge_pruning(pairs, place)
        if not parts:
            continue
        verdicts.append(f"{model_display(model)}: " + "; ".join(
            f"{verdict}{'' if place == 's3' else f' at {place}'}" for place, (verdict, _) in parts.items()))
        evidence.append(f"{model_display(model)} " + "; ".join(text for _, text in parts.values()))
    rule = (f"per model, over the (attack, seed) pairs of RBT and ML-MMDR runs pruned by the real trigger (channels "
            f"ranked by their mean on triggered inputs): the pruned ratio at which ASR first falls below "
            f"{PRUNED_ASR:g}; a pair is usable when both fall below it short of the whole layer. 'Reproduced' (pruning "
            f"is less effective on ML-MMDR) if ML-MMDR's ratio minus RBT's is on average ≥ {PRUNE_MARGIN:g} with its "
            f"95% bootstrap interval above 0; 'needs less pruning' if ≤ −{PRUNE_MARGIN:g} with the interval below 0; "
            f"'not measurable' below {MIN_PRUNE_PAIRS} usable pairs. Judged at the paper's s3 and, as a second "
            f"verdict, at the input of the last convolution (on a test subset: C8's diagnostic)")
    return Claim("C8", "Pruning by the real trigger is less effective on ML-MMDR models (§6.2, Fig. 10)", rule,
                 "; ".join(verdicts) or NOT_RUN, ". ".join(evidence) or "no pruning result yet", PAPER["c8"])


def cases_pruning(runs: Runs) -> list:
    return [pruning_difference(rbt, ml) for _, _, rbt, ml in prune_pairs(runs)]


def later_detectors() -> tuple:
    """The detectors published after the paper that read representations (C9's subjects)."""
    return tuple(name for name, d in DETECTORS.items() if not d.paper and d.consumes != "inputs")


def control_detectors() -> tuple:
    """Detectors that read inputs alone (STRIP): C9's control."""
    return tuple(name for name, d in DETECTORS.items() if d.consumes == "inputs")


def class_level_detectors() -> tuple:
    """The later detectors that judge classes (SCAn, Beatrix's class test): they flag a target or not."""
    return tuple(d for d in later_detectors() if DETECTORS[d].consumes == "classes")


def flagged_count(records: list, detector: str, levels=LEVELS) -> tuple:
    """(how often a class-level detector flagged the target, how often it ran) over records × levels."""
    hits = [target_flagged(r, detector, lv) for r in records for lv in levels]
    hits = [h for h in hits if h is not None]
    return sum(hits), len(hits)


def _unchanged(differences: list) -> dict:
    """The control's rule: 'unchanged' when the whole 95% interval of the mean difference lies within
    ±DETECTION_MARGIN, else 'changed' ('not measurable' below MIN_CASES)."""
    found = paired_verdict(differences, DETECTION_MARGIN, MIN_CASES, "changed", "changed", "changed")
    if found["interval"] is not None:
        found["verdict"] = "unchanged" if max(map(abs, found["interval"])) < DETECTION_MARGIN else "changed"
    return found


def _detector_differences(runs: Runs, detector: str) -> list:
    return [detector_f1(rbt, detector) - detector_f1(ml, detector)
            if present(detector_f1(rbt, detector), detector_f1(ml, detector)) else None
            for _, _, rbt, _, ml in runs.cells() if ml]


def claim_later_detectors(runs: Runs) -> Claim:
    cells = [(rbt, ml) for _, _, rbt, _, ml in runs.cells() if ml]
    judged, parts = {}, []
    for detector in later_detectors() + tuple(d for d, x in DETECTORS.items() if x.paper):
        judged[detector] = paired_verdict(_detector_differences(runs, detector), DETECTION_MARGIN, MIN_CASES,
                                          "lowered", "raised", "not lowered")
    controls = {detector: _unchanged(_detector_differences(runs, detector)) for detector in control_detectors()}
    for detector, found in {**judged, **controls}.items():
        parts.append(f"{display_name(detector)}{' (control)' * (detector in controls)} "
                     f"{fmt(mean_of([detector_f1(r, detector) for r, _ in cells]))} → "
                     f"{fmt(mean_of([detector_f1(m, detector) for _, m in cells]))} ({found['verdict']})")
    flagged = []
    for detector in class_level_detectors():
        for name, index in (("RBT", 0), ("ML-MMDR", 1)):
            hits, total = flagged_count([pair[index] for pair in cells], detector)
            if total:
                flagged.append(f"{display_name(detector)} flags the target under {name} in {hits}/{total} "
                               "cell × level")
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
                + (". " + "; ".join(flagged) if flagged else "") + (". " + "; ".join(by_attack) if by_attack else "")
                + f". Detector-free separability (5-fold linear SVM accuracy): {separability}")
    subjects = [judged[d]["verdict"] for d in later_detectors()]
    verdict = ("not measurable" if not subjects or all(v == NOT_MEASURABLE for v in subjects) else
               "; ".join(f"{display_name(d)} {judged[d]['verdict']}" for d in later_detectors())
               + "".join(f"; {display_name(d)} (control) {c['verdict']}" for d, c in controls.items()))
    rule = (f"per detector, over the (model, attack, seed) cells: RBT's minus ML-MMDR's F1 (pool detectors: the "
            f"headline, mean over levels and pools; class-level detectors: the F1 inside the target class where they "
            f"flag it, 0 where they do not). 'Lowered' if the mean difference is ≥ {DETECTION_MARGIN:g} with its 95% "
            f"bootstrap interval above 0, 'raised' if ≤ −{DETECTION_MARGIN:g} with the interval below 0, else "
            f"'not lowered'; the input-level control is 'unchanged' if the interval lies within ±{DETECTION_MARGIN:g}; "
            f"'not measurable' below {MIN_CASES} cells")
    return Claim("C9", "New: does ML-MMDR lower the detection of SPECTRE, SCAn and Beatrix as it lowers AC's, SS's "
                       "and SR's, with STRIP (no representation) unchanged?", rule, verdict, evidence, PAPER["new"])


def _by_attack(runs: Runs) -> dict:
    """{attack: [(RBT record, ML-MMDR record)]} over the models and seeds of C9's cells."""
    found = {}
    for _, attack, rbt, _, ml in runs.cells():
        if ml:
            found.setdefault(attack, []).append((rbt, ml))
    return found


def cases_later_detectors(runs: Runs) -> list:
    return [d for detector in later_detectors() for d in _detector_differences(runs, detector)]


def mean_detection_f1(record):
    """Mean F1 over every registered detector (detector_f1's single number per detector)."""
    return mean_of([detector_f1(record, d) for d in DETECTORS])


def adaptive_runs(runs: Runs, method: str) -> dict:
    """{(attack, poison ratio): [record, …]} of the adaptive study under ``method``."""
    found = {}
    for r in runs.study("adaptive"):
        c = r["config"]
        if c.method == method and r["evaluation"]:
            found.setdefault((c.attack_name, c.poison_ratio), []).append(r)
    return found


def works(record) -> bool:
    return present(metric_of(record, "asr")) and metric_of(record, "asr") >= ASR_WORKS


def _against(runs: Runs, records: list, counterpart) -> list:
    """Per-detector F1 differences of each working record against ``counterpart(record)`` (a list of
    records of the same seed, averaged; working ones only)."""
    out = []
    for r in records:
        others = [o for o in counterpart(r) if o and o["evaluation"] and works(o)]
        if not works(r) or not others:
            continue
        for detector in DETECTORS:
            mine, theirs = detector_f1(r, detector), mean_of([detector_f1(o, detector) for o in others])
            out.append(mine - theirs if present(mine, theirs) else None)
    return out


def _mlmmdr_on(runs: Runs, record, attacks=None) -> list:
    """The main grid's ML-MMDR runs (the claims' λ) of ``record``'s model and seed on ``attacks``."""
    c = record["config"]
    attacks = attacks or sorted(set(BASE_ATTACK.values()))
    return [runs.pick(c.model_name, attack, "ML-MMDR", seed=c.seed) for attack in attacks]


def _rate(ratio: float) -> str:
    return f"{100 * ratio:g}%"


def _summary(records: list) -> str:
    return (f"F1 {mean_sd([mean_detection_f1(r) for r in records])}, BA {mean_sd([metric_of(r, 'ba') for r in records])}, "
            f"ASR {mean_sd([metric_of(r, 'asr') for r in records])}")


def claim_adaptive(runs: Runs) -> Claim:
    verdicts, evidence = [], []
    for (attack, ratio), records in adaptive_runs(runs, "RBT").items():
        found = paired_verdict(_against(runs, records, lambda r: _mlmmdr_on(runs, r)), DETECTION_MARGIN, MIN_CASES,
                               "hides worse than ML-MMDR", "hides better than ML-MMDR", "hides as ML-MMDR does")
        failed = [r for r in records if not works(r)]
        verdicts.append(f"{display_attack(attack)} at {_rate(ratio)}: {found['verdict']}"
                        + (f" ({len(failed)} of {len(records)} runs failed)" if failed else ""))
        evidence.append(f"{display_attack(attack)} at {_rate(ratio)}: {_summary(records)}"
                        + _interval_text(found))
    baselines = {attack: [r for r in (runs.pick(m, attack, "ML-MMDR", seed=s) for s in runs.seeds()
                                      for m in runs.models()[:1]) if r and r["evaluation"]]
                 for attack in sorted(set(BASE_ATTACK.values()))}
    evidence += [f"ML-MMDR on {attack} at 10%: {_summary(records)}" for attack, records in baselines.items() if records]
    best = _hides_best(runs, baselines) if verdicts else ""  # no adaptive run: nothing to compare
    if best:
        verdicts.append(f"hides best: {best}")
    rule = (f"for each adaptive attack and poisoning rate, per (seed, registered detector): its F1 under RBT minus "
            f"ML-MMDR's (λ = {runs.lamb:g}, mean of the working Blended and Patched runs of the same seed at 10%). 'Hides "
            f"better' if the mean difference is ≤ −{DETECTION_MARGIN:g} with its 95% bootstrap interval below 0, "
            f"'worse' if ≥ {DETECTION_MARGIN:g} above 0, else 'as ML-MMDR does'; a run whose ASR is below "
            f"{ASR_WORKS:g} failed and counts in no comparison; 'not measurable' below {MIN_CASES} cases. 'Hides "
            f"best' = the lowest mean F1 over detectors among the working attacks")
    return Claim("C10", "New: do the attacks built for latent inseparability (Adaptive-Blend, Adaptive-Patch, TaCT) "
                        "hide better than ML-MMDR?", rule, "; ".join(verdicts) or NOT_RUN,
                 ". ".join(evidence) or "no adaptive run yet", PAPER["new"])


def _interval_text(found: dict) -> str:
    if found["mean"] is None:
        return f" ({found['cases']} cases: {found['verdict']})"
    low, high = found["interval"]
    return f"; mean difference {found['mean']:+.3f}, 95% interval [{low:+.3f}, {high:+.3f}] over {found['cases']} cases"


def _hides_best(runs: Runs, baselines: dict) -> str:
    """'<attack> (<method>, <rate>): F1 …, BA …, ASR …' of the lowest mean detection F1 among working runs."""
    candidates = {}
    for method in ("RBT", "ML-MMDR"):
        for (attack, ratio), records in adaptive_runs(runs, method).items():
            candidates[f"{display_attack(attack)} ({method}, {_rate(ratio)})"] = records
    for attack, records in baselines.items():
        candidates[f"{display_attack(attack)} (ML-MMDR, 10%)"] = records
    scored = {name: mean_of([mean_detection_f1(r) for r in records if works(r)]) for name, records in candidates.items()}
    scored = {name: f1 for name, f1 in scored.items() if f1 is not None}
    if not scored:
        return ""
    name = min(scored, key=scored.get)
    return f"{name}: {_summary([r for r in candidates[name] if works(r)])}"


def display_attack(name: str) -> str:
    return {"adaptive_blend": "Adaptive-Blend", "adaptive_patch": "Adaptive-Patch", "tact": "TaCT",
            "patched": "Patched", "blended": "Blended", "sig": "SIG", "warped": "WaNet"}.get(name, name)


def cases_adaptive(runs: Runs) -> list:
    return [d for records in adaptive_runs(runs, "RBT").values()
            for d in _against(runs, records, lambda r: _mlmmdr_on(runs, r))]


def _alone(runs: Runs, record) -> list:
    """The same adaptive attack under RBT, same rate and seed."""
    c = record["config"]
    return [r for r in runs.study("adaptive") if r["config"].method == "RBT" and r["config"].attack_name == c.attack_name
            and r["config"].poison_ratio == c.poison_ratio and r["config"].seed == c.seed]


def claim_stacked(runs: Runs) -> Claim:
    verdicts, evidence = [], []
    for (attack, ratio), records in adaptive_runs(runs, "ML-MMDR").items():
        versus_attack = paired_verdict(_against(runs, records, lambda r: _alone(runs, r)), DETECTION_MARGIN, MIN_CASES,
                                       "worse", "better", "no better")
        versus_mmdr = paired_verdict(
            _against(runs, records, lambda r: _mlmmdr_on(runs, r, [BASE_ATTACK[r["config"].attack_name]])),
            DETECTION_MARGIN, MIN_CASES, "worse", "better", "no better")
        both = {versus_attack["verdict"], versus_mmdr["verdict"]}
        verdict = ("not measurable" if NOT_MEASURABLE in both else "they add up" if both == {"better"} else
                   f"{versus_attack['verdict']} than {display_attack(attack)} alone, {versus_mmdr['verdict']} than "
                   f"ML-MMDR alone")
        verdicts.append(f"{display_attack(attack)} + ML-MMDR at {_rate(ratio)}: {verdict}")
        evidence.append(f"{display_attack(attack)} + ML-MMDR at {_rate(ratio)}: {_summary(records)}; against "
                        f"{display_attack(attack)} alone" + _interval_text(versus_attack)
                        + f"; against ML-MMDR on {display_attack(BASE_ATTACK[attack])}" + _interval_text(versus_mmdr))
    rule = ("for each stacked attack and rate, per (seed, registered detector): its F1 with ML-MMDR minus (a) the "
            "same attack's under RBT and (b) ML-MMDR's on the attack it reshapes (Blended for Adaptive-Blend, Patched "
            "for Adaptive-Patch) at 10%; each difference judged as in C10. 'They add up' if it is better than both")
    return Claim("C11", "New: does ML-MMDR stacked on an adaptive attack hide better than either alone?", rule,
                 "; ".join(verdicts) or NOT_RUN, ". ".join(evidence) or "no stacked run yet", PAPER["new"])


def cases_stacked(runs: Runs) -> list:
    return [d for records in adaptive_runs(runs, "ML-MMDR").values()
            for d in _against(runs, records, lambda r: _alone(runs, r))]


EXTENDED = (
    Judged(claim_pruning, cases_pruning, "ML-MMDR's minus RBT's pruned ratio where ASR < 0.2, per usable pair, pooled over the "
           "models the verdict judges apart",
           f"≥ {PRUNE_MARGIN:g}", PRUNE_MARGIN, by_seed=False),
    Judged(claim_later_detectors, cases_later_detectors,
           "RBT's minus ML-MMDR's F1, per cell × detector, pooled over " + ", ".join(display_name(d) for d in later_detectors()),
           f"≥ {DETECTION_MARGIN:g}", DETECTION_MARGIN),
    Judged(claim_adaptive, cases_adaptive, "an adaptive attack's (RBT) minus ML-MMDR's F1, per seed × detector",
           f"≤ −{DETECTION_MARGIN:g} (hides better)", -DETECTION_MARGIN, by_seed=False),
    Judged(claim_stacked, cases_stacked, "stacked minus the adaptive attack alone, F1 per seed × detector",
           f"≤ −{DETECTION_MARGIN:g} (better)", -DETECTION_MARGIN, by_seed=False),
)
