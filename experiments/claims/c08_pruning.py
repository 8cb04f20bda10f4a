"""C8: pruning by the real trigger is less effective on ML-MMDR models (paper §6.2, Fig. 10), judged at
the paper's s3 and at the last convolution's input; and the report's section on where pruning
removes the backdoor (C8's diagnostic)."""
from experiments.claim import Claim, RuleChange, Section, register, seed_unit_change
from experiments.pruned import PLACES, PRUNED_ASR, first_point, short_of_the_layer
from experiments.records import Runs, fmt, mean_of, mean_sd, method_label_of
from experiments.rules import interval_text, seed_rule_text
from experiments.spread import NOT_RUN
from experiments.tables import markdown_table
from metrics.intervals import paired_verdict
from models import display_name as model_display

PRUNE_MARGIN = 0.05    # ML-MMDR "needs more pruning" by at least one step of the 5% grid
MIN_PRUNE_PAIRS = 3


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
    a, b = short_of_the_layer(PLACES[place](rbt)), short_of_the_layer(PLACES[place](ml))
    return b["ratio"] - a["ratio"] if a and b else None


def _judge_pruning(pairs: list, place: str) -> tuple:
    """(verdict, evidence) of C8's rule on ``pairs`` at ``place``."""
    found = paired_verdict([(rbt["config"].seed, pruning_difference(rbt, ml, place)) for rbt, ml in pairs],
                           PRUNE_MARGIN, MIN_PRUNE_PAIRS,
                           "reproduced: ML-MMDR needs more pruning", "not reproduced: ML-MMDR needs less pruning",
                           "not reproduced: no consistent difference")
    points = {name: [first_point(PLACES[place](r)) for r in records] for name, records in
              (("RBT", [p[0] for p in pairs]), ("ML-MMDR", [p[1] for p in pairs]))}
    whole = sum(1 for rbt, ml in pairs if pruning_difference(rbt, ml, place) is None)
    evidence = (f"at {place}, {len(pairs)} pairs, {len(pairs) - whole} usable: pruned ratio where ASR < "
                f"{PRUNED_ASR:g}: " + "; ".join(
                    f"{name} {mean_sd([p['ratio'] if p else None for p in found_points], 2)} (BA there "
                    f"{mean_sd([p['ba'] if p else None for p in found_points])})" for name, found_points in points.items())
                + (interval_text(found) if found["mean"] is not None else "")
                + (f"; {whole} pair{'s' * (whole != 1)} unusable: on one run ASR fell below {PRUNED_ASR:g} only with the "
                   f"whole layer pruned, or never" if whole else ""))
    return found["verdict"], evidence


def judge(runs: Runs) -> tuple:
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
    return "; ".join(verdicts) or NOT_RUN, ". ".join(evidence) or "no pruning result yet"


def cases(runs: Runs) -> list:
    return [pruning_difference(rbt, ml) for _, _, rbt, ml in prune_pairs(runs)]


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


RULE = (f"per model, over the (attack, seed) pairs of RBT and ML-MMDR runs pruned by the real trigger (channels "
        f"ranked by their mean on triggered inputs): the pruned ratio at which ASR first falls below "
        f"{PRUNED_ASR:g}; a pair is usable when both fall below it short of the whole layer. 'Reproduced' (pruning "
        f"is less effective on ML-MMDR) on ML-MMDR's ratio minus RBT's, where "
        + seed_rule_text(PRUNE_MARGIN, "needs more pruning", "needs less pruning", "no consistent difference")
        + f"; 'not measurable' below {MIN_PRUNE_PAIRS} usable pairs. Judged at the paper's s3 and, as a second "
        f"verdict, at the input of the last convolution (on a test subset: C8's diagnostic)")

CLAIM = register(Claim(
    id="C8",
    statement="Pruning by the real trigger is less effective on ML-MMDR models (§6.2, Fig. 10)",
    paper="§6.2, Fig. 10: 'the performance of the neuron pruning is reduced on the models trained with ML-MMDR "
          "compared to on the models trained with RBT' (no number in the text)",
    studies=("lambda", "model"),
    rule=RULE, judge=judge, cases=cases,
    statistic="ML-MMDR's minus RBT's pruned ratio where ASR < 0.2, per usable pair, pooled over the "
              "models the verdict judges apart",
    margin=f"≥ {PRUNE_MARGIN:g}", threshold=PRUNE_MARGIN, by_seed=False,
    history=(RuleChange("2026-12-01, commits 6e165b2 and fe7fbdd", "the rule was first written after v2 had shown "
                        "the pruning ratios (VGG-11: RBT 0.35, ML-MMDR 0.25; PreActResNet-18: 1.00 for all three "
                        "runs): a pair usable only when both runs fall below ASR 0.2 short of the whole layer, and a "
                        "second verdict at the last convolution's input", True,
                        "none: v2 showed the ratios without a rule", "none"),
             seed_unit_change("VGG-11: not reproduced: ML-MMDR needs less pruning; not reproduced: no consistent "
                              "difference at the last convolution's input; PreActResNet-18: not measurable; not "
                              "reproduced: ML-MMDR needs less pruning at the last convolution's input")),
    checks="The pruning mask is tested to zero exactly the ranked channels of the tapped module and to leave the "
           "model's weights untouched, and both rankings are tested on known activations (tests/test_defend.py); "
           "the pruning section shows which tensor each architecture prunes and the curves of the alternatives.",
    sections=(Section(100, lambda report: section_pruning_places(report.runs)),)))
