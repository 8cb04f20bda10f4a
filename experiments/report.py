"""REPRODUCTION.md from the files the grid wrote; every number is read from a run's JSON.

The claim verdicts follow fixed rules stated in the report next to each verdict, so a rerun
on other settings is judged the same way.
"""
import statistics
from pathlib import Path

from defenses import DEFENSES, DETECTORS, target_ranking
from metrics import DISTANCES, METRICS
from models import LEVELS
from visualization.common import method_label


def _f(value, digits: int = 3) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"


def _label(record) -> str:
    return method_label(record["config"].method, record["config"].mlmmdr_lamb)


def _mean(values):
    values = [v for v in values if v is not None and v == v]
    return statistics.mean(values) if values else None


def _f1(record, detector: str, level: str, rule: str = "headline"):
    evaluation = record["evaluation"]
    if not evaluation:
        return None
    return _mean([pool["levels"][level][detector][rule] for pool in evaluation["detection"]["pools"]
                  if pool["levels"]])


def _distance(record, metric: str, level: str, key: str = "attack"):
    evaluation = record["evaluation"]
    return evaluation["distances"]["levels"][level][metric][key] if evaluation else None


def _by_attack(records) -> dict:
    grouped = {}
    for record in records:
        grouped.setdefault(record["config"].attack_name, []).append(record)
    return grouped


NC_RATIO = 0.5  # the target's ‖m‖₁ at most half the others' median counts as singled out


def _pick(records, method: str, lamb=None):
    for record in records:
        config = record["config"]
        if config.method == method and (lamb is None or abs(config.mlmmdr_lamb - lamb) < 1e-12):
            return record
    return None


def _verdict(fraction: float, full: float = 1.0, part: float = 0.5) -> str:
    return "reproduced" if fraction >= full else "partly reproduced" if fraction >= part else "not reproduced"


def claims(records, lamb: float) -> list:
    """[(claim, verdict, evidence, rule)] for the paper's findings, judged at λ = ``lamb``."""
    groups = _by_attack(records)
    rbt = {a: _pick(rs, "RBT") for a, rs in groups.items()}
    ml = {a: _pick(rs, "ML-MMDR", lamb) for a, rs in groups.items()}
    sl = {a: _pick(rs, "SL-MMDR", lamb) for a, rs in groups.items()}
    attacks = [a for a in groups if rbt[a] and ml[a] and sl[a] and rbt[a]["evaluation"] and ml[a]["evaluation"]]
    out = []

    kept = [abs(ml[a]["metrics"]["ba"] - rbt[a]["metrics"]["ba"]) <= 0.02 and
            ml[a]["metrics"]["asr"] >= rbt[a]["metrics"]["asr"] - 0.05 for a in attacks]
    out.append(("ML-MMDR keeps the attack: BA and ASR barely move",
                _verdict(sum(kept) / max(len(kept), 1)),
                "; ".join(f"{a}: BA {_f(rbt[a]['metrics']['ba'])}→{_f(ml[a]['metrics']['ba'])}, ASR "
                          f"{_f(rbt[a]['metrics']['asr'])}→{_f(ml[a]['metrics']['asr'])}" for a in attacks),
                "per attack |ΔBA| ≤ 0.02 and ΔASR ≥ −0.05; reproduced if every attack, partly if half"))

    def present(*values):
        return all(v is not None and v == v for v in values)

    above = [all(_distance(rbt[a], m, lv) > _distance(rbt[a], m, lv, "intra") for m in METRICS)
             for a in attacks for lv in LEVELS
             if all(present(_distance(rbt[a], m, lv), _distance(rbt[a], m, lv, "intra")) for m in METRICS)]
    aro_rbt = {lv: _mean([rbt[a]["evaluation"]["distances"]["aro"][lv] for a in attacks]) for lv in LEVELS}
    out.append(("Under RBT the benign/malicious differences are large at all levels (s1, s2, s3)",
                _verdict(sum(above) / len(above)) if above else "not measurable",
                f"attack distance above the intra-class baseline for all three metrics in {sum(above)}/{len(above)} "
                f"measurable attack×level cells; mean ARO " + ", ".join(f"{lv} {_f(aro_rbt[lv], 2)}" for lv in LEVELS),
                "reproduced if every attack×level cell, partly if half"))

    def mmd_ratios(method_runs):
        return {lv: [_distance(method_runs[a], "mmd2", lv) / _distance(rbt[a], "mmd2", lv) for a in attacks
                     if present(_distance(method_runs[a], "mmd2", lv), _distance(rbt[a], "mmd2", lv))
                     and _distance(rbt[a], "mmd2", lv) > 0] for lv in LEVELS}

    ratios = mmd_ratios(ml)
    reduced = [r < 1 for lv in LEVELS for r in ratios[lv]]
    halved = [r <= 0.5 for lv in LEVELS for r in ratios[lv]]
    verdict = ("not measurable" if not reduced else "reproduced" if all(reduced) and sum(halved) >= len(halved) / 2
               else "partly reproduced" if sum(reduced) >= len(reduced) / 2 else "not reproduced")
    out.append((f"ML-MMDR (λ={lamb:g}) reduces the differences at all levels", verdict,
                "MMD² ML-MMDR / RBT, median over attacks: "
                + ", ".join(f"{lv} {_f(statistics.median(ratios[lv]), 2)}" for lv in LEVELS if ratios[lv])
                + f"; reduced in {sum(reduced)}/{len(reduced)} cells, at least halved in {sum(halved)}/{len(halved)}",
                "reproduced if MMD² falls in every attack×level cell and at least halves in half of them; "
                "partly if it falls in half"))

    sl_early = _mean([_f1(sl[a], d, lv) for a in attacks for d in DETECTORS for lv in ("s1", "s2")])
    ml_early = _mean([_f1(ml[a], d, lv) for a in attacks for d in DETECTORS for lv in ("s1", "s2")])
    sl_ratio = {lv: statistics.median(values) for lv, values in mmd_ratios(sl).items() if values}
    conditions = [sl_early is not None and ml_early is not None and sl_early - ml_early >= 0.1,
                  len(sl_ratio) == 3 and min(sl_ratio["s1"], sl_ratio["s2"]) > sl_ratio["s3"]]
    measurable = sl_early is not None and ml_early is not None and len(sl_ratio) == 3
    out.append(("SL-MMDR (last level only) leaves s1/s2 detectable",
                _verdict(sum(conditions) / 2) if measurable else "not measurable",
                f"mean headline F1 at s1/s2: SL-MMDR {_f(sl_early)}, ML-MMDR {_f(ml_early)}; SL-MMDR MMD²/RBT median "
                + ", ".join(f"{lv} {_f(sl_ratio[lv], 2)}" for lv in sl_ratio),
                "two conditions: SL-MMDR's s1/s2 F1 exceeds ML-MMDR's by ≥ 0.1, and SL-MMDR reduces MMD² less at "
                "s1 and s2 than at s3; reproduced if both, partly if one"))

    f1_rbt = _mean([_f1(rbt[a], d, lv) for a in attacks for d in DETECTORS for lv in LEVELS])
    f1_ml = _mean([_f1(ml[a], d, lv) for a in attacks for d in DETECTORS for lv in LEVELS])
    conditions = [f1_rbt is not None and f1_rbt >= 0.85, f1_ml is not None and f1_ml <= 0.75]
    drop = f1_rbt is not None and f1_ml is not None and f1_rbt - f1_ml >= 0.1
    verdict = ("not measurable" if f1_rbt is None or f1_ml is None else "reproduced" if all(conditions)
               else "partly reproduced" if drop else "not reproduced")
    out.append(("Detection F1 (AC, SS, SR) drops from ~0.9–1.0 under RBT to ~0.6–0.7 under ML-MMDR", verdict,
                f"mean headline F1 over attacks, detectors, levels and pools: RBT {_f(f1_rbt)}, ML-MMDR {_f(f1_ml)}",
                "reproduced if RBT ≥ 0.85 and ML-MMDR ≤ 0.75; partly if F1 drops by ≥ 0.1"))

    defended = [(a, r, target_ranking(r["nc"]["norms"], r["config"].target))
                for a in attacks for r in (rbt[a], ml[a]) if r and r["nc"]]
    singled = [rank["target_l1_rank"] == 1 and rank["target_l1_ratio_to_median"] <= NC_RATIO
               for _, r, rank in defended if r["config"].method == "ML-MMDR"]
    out.append(("Neural Cleanse still singles out the target by its ℓ1 norm under ML-MMDR (§6.2, Fig. 8)",
                _verdict(sum(singled) / len(singled)) if singled else "not run",
                "; ".join(f"{a} {_label(r)}: target ‖m‖₁ rank {rank['target_l1_rank']}, "
                          f"{_f(rank['target_l1_ratio_to_median'], 2)}× the others' median "
                          f"(anomaly index {_f(r['nc']['target_anomaly_index'], 2)}, flagged {r['nc']['flagged']})"
                          for a, r, rank in defended),
                f"reproduced if on every defended ML-MMDR run the target's mask has the smallest ℓ1 norm of all "
                f"classes and at most {NC_RATIO:g}× the median of the others (the paper judges 'the "
                f"distinguishability of the l1 norm'); Wang et al.'s anomaly index (> 2 flags) is shown beside"))
    return out


def render(records, settings: dict, lamb: float, figures: dict) -> str:
    groups = _by_attack(records)
    lines = ["# Reproducing ML-MMDR at CPU scale", "",
             "Generated by `experiments/reproduce.py`; every number below is read from the files that command "
             "wrote under the runs directory. Do not edit by hand: rerun the command.", "",
             "## Setting", "", f"Command: `{settings['command']}`", ""]
    lines += [f"- {key}: {value}" for key, value in settings["facts"].items()]
    lines += ["", "## Claims", "", "| paper's finding | verdict | our numbers | rule |", "|---|---|---|---|"]
    lines += [f"| {c} | **{v}** | {e} | {r} |" for c, v, e, r in claims(records, lamb)]

    lines += ["", "## What differs from the paper's setting", ""]
    lines += [f"- {item}" for item in settings.get("differences", [])]
    lines += ["", "## BA and ASR", "", "| attack | " + " | ".join(_label(r) for r in next(iter(groups.values())))
              + " |", "|---" * (1 + len(next(iter(groups.values())))) + "|"]
    for attack, rs in groups.items():
        cells = [f"{_f(r['metrics']['ba'])} / {_f(r['metrics']['asr'])}" if r["metrics"] else "–" for r in rs]
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: BA / ASR on the test set after the last epoch."]
    unstable = []
    for r in records:
        history = (r["metrics"] or {}).get("history", [])
        measured = [(row["epoch"], row["ba"]) for row in history if row.get("ba") is not None]
        if measured and max(ba for _, ba in measured) - measured[-1][1] > 0.1:
            unstable.append(f"{r['config'].attack_name}, {_label(r)}: BA at epochs "
                            + ", ".join(f"{epoch} {_f(ba)}" for epoch, ba in measured))
    if unstable:
        lines += ["", "Runs whose final BA is more than 0.1 below their best measured BA (the learning rate is "
                      "never decayed in this short schedule, so the last epoch can land on a bad point):", ""]
        lines += [f"- {item}" for item in unstable]

    lines += ["", "## Distributional differences (paper TABLE 2, App. B)", "",
              "Rows: the benign-vs-malicious distance of each training method, then the RBT run's intra-class and "
              "minimal inter-class baselines. ARO per level in the last columns (3 = farther than the nearest "
              "other class)."]
    header = " | ".join(f"{DISTANCES[m].display} {lv}" for m in METRICS for lv in LEVELS)
    for attack, rs in groups.items():
        lines += ["", f"### {attack}", "", f"| | {header} | ARO s1 | ARO s2 | ARO s3 |",
                  "|---" * (1 + len(METRICS) * len(LEVELS) + 3) + "|"]
        for r in rs:
            aro = r["evaluation"]["distances"]["aro"] if r["evaluation"] else {}
            lines.append(f"| {_label(r)} | " + " | ".join(_f(_distance(r, m, lv)) for m in METRICS for lv in LEVELS)
                         + " | " + " | ".join(_f(aro.get(lv), 2) for lv in LEVELS) + " |")
        base = _pick(rs, "RBT")
        for key, name in (("intra", "intra-class (RBT)"), ("inter", "inter-class min (RBT)")):
            lines.append(f"| {name} | " + " | ".join(_f(_distance(base, m, lv, key)) for m in METRICS for lv in LEVELS)
                         + " | | | |")

    for rule, title in (("headline", "headline: each method's own rule as the paper uses it (SR: max F1 over "
                                     "thresholds)"),
                        ("oracle", "oracle diagnostic: the best labeling / threshold chosen with the ground truth")):
        lines += ["", f"## Detection F1, {title} (paper §6.1, Figs. 5–7)", "",
                  "Mean over the pools (N, r′) of each run's evaluation.json.", "",
                  "| attack | method | " + " | ".join(f"{DEFENSES[d].display} {lv}" for d in DETECTORS
                                                        for lv in LEVELS) + " |",
                  "|---|---|" + "---|" * (len(DETECTORS) * len(LEVELS))]
        for attack, rs in groups.items():
            for r in rs:
                lines.append(f"| {attack} | {_label(r)} | " + " | ".join(_f(_f1(r, d, lv, rule)) for d in DETECTORS
                                                                          for lv in LEVELS) + " |")

    defended = [r for r in records if r["nc"] or r["prune"]]
    if defended:
        lines += ["", "## Neural Cleanse and pruning (paper §6.2, Figs. 8–10)", "",
                  "| run | target ‖m‖₁ | its rank (1 = smallest) | ratio to the others' median | "
                  "target anomaly index | flagged | pruned ratio where ASR < 0.2 | BA there |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in defended:
            nc, prune = r["nc"], r["prune"]
            target = r["config"].target
            ranking = target_ranking(nc["norms"], target) if nc else {}
            point = next((p for p in prune["curve"] if p["asr"] < 0.2), None) if prune else None
            lines.append(f"| {r['config'].attack_name}, {_label(r)} | {_f(nc['norms'][target], 1) if nc else '–'} | "
                         f"{ranking.get('target_l1_rank', '–')} | {_f(ranking.get('target_l1_ratio_to_median'), 2)} | "
                         f"{_f(nc['target_anomaly_index'], 2) if nc else '–'} | {nc['flagged'] if nc else '–'} | "
                         f"{_f(point['ratio'], 2) if point else 'never'} | {_f(point['ba']) if point else '–'} |")

    lines += ["", "## Figures", ""]
    for caption, path in figures.items():
        lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
    return "\n".join(lines) + "\n"
