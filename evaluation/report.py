"""Markdown rendering of evaluation.json: tables shaped like the paper's TABLE 2 and Figs. 5–7."""
from defenses import DEFENSES, DETECTORS
from metrics import DISTANCES, METRICS
from models import LEVELS


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if value != value:  # NaN
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def distance_table(result: dict) -> list:
    levels = result["distances"]["levels"]
    header = "| | " + " | ".join(f"{DISTANCES[m].display} {lv}" for m in METRICS for lv in LEVELS) + " |"
    lines = [header, "|---" * (1 + len(METRICS) * len(LEVELS)) + "|"]
    for key, label in (("attack", f"{result['attack_name']} (benign vs malicious)"),
                       ("intra", "intra-class"), ("inter", "inter-class (min)")):
        cells = [_fmt(levels[lv][m][key]) for m in METRICS for lv in LEVELS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    aro = result["distances"]["aro"]
    lines += ["", "ARO (average ascending rank of the attack row among the three, 3 = farthest): "
              + ", ".join(f"{lv} {_fmt(aro[lv], 3)}" for lv in LEVELS)]
    return lines


def _beside(scores: dict) -> str:
    """The headline F1 and, in parentheses, the other rule's F1 (the oracle for AC and SS; SR's
    label-free percentile rule for SR, whose headline is the paper's max F1)."""
    other = "oracle" if scores["headline_rule"] == "own" else "own"
    return f"{scores['headline']:.3f} ({other} {scores[other]:.3f})"


def detection_table(result: dict) -> list:
    pools = result["detection"]["pools"]
    header = "| method | level | " + " | ".join(f"N={p['N']}, r′={p['ratio']:g}" for p in pools) + " |"
    lines = [header, "|---|---|" + "---|" * len(pools)]
    for name in DETECTORS:
        label = DEFENSES[name].display
        for level in LEVELS:
            cells = []
            for pool in pools:
                scores = pool["levels"].get(level, {}).get(name)
                cells.append("–" if scores is None else _beside(scores))
            lines.append(f"| {label} | {level} | " + " | ".join(cells) + " |")
    sizes = ", ".join(f"N={p['N']} r′={p['ratio']:g}: {p['benign']} benign + {p['malicious']} malicious"
                      for p in pools)
    lines += ["", f"Pool sizes used: {sizes}."]
    return lines


def variants_table(result: dict) -> list:
    """Every detector form and decision rule evaluation.json holds, mean F1 over the pools."""
    pools = [p for p in result["detection"]["pools"] if p["levels"]]
    if not pools:
        return []
    first = pools[0]["levels"][LEVELS[0]]
    rows = [(name, variant, rule) for name in ("ac", "ss") for variant, rules in first[name]["variants"].items()
            for rule in rules]
    lines = ["| detector | form | rule | " + " | ".join(LEVELS) + " |", "|---|---|---|" + "---|" * len(LEVELS)]
    for name, variant, rule in rows:
        means = [sum(p["levels"][level][name]["variants"][variant][rule] for p in pools) / len(pools)
                 for level in LEVELS]
        lines.append(f"| {DEFENSES[name].display} | {variant} | {rule} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return lines


def render(result: dict) -> str:
    counts = result["distances"]["counts"]
    lines = [f"# Evaluation of `{result['run_name']}`", "",
             f"{result['method']} (λ = {result['mlmmdr_lamb']:g}, regularised levels "
             f"{'s1, s2, s3' if result['mlmmdr_layer'] == 'all' else 's3'}), "
             f"{result['data_name']} / {result['model_name']} / {result['attack_name']}, target {result['target']}.",
             "", f"BA = {result['ba']:.4f}, ASR = {result['asr']:.4f} (test set).", "",
             "## Distributional differences (paper §4, TABLE 2)", "",
             f"Benign target set: {counts['benign_half_a']} (half A) vs {counts['benign_half_b']} (half B) of "
             f"{counts['benign_target_available']} clean test images classified as the target; malicious set: "
             f"{counts['malicious']} of {counts['malicious_available']} triggered non-target test images "
             f"classified as the target; inter-class sets ≤ {result['options']['num_samples']} each.", ""]
    lines += distance_table(result)
    lines += [f"- {note}" for note in result["distances"]["notes"]]
    options = result["options"]
    lines += ["", "## Detection F1 (paper §6.1)", "",
              f"Each cell: the headline F1, the method's own decision as the paper uses it. AC: "
              f"{options['ac_reduce'].upper()} to {options['ac_components']} dimensions, k-means with k = 2, "
              f"rule `{options['ac_decision']}`; SS: {options['ss_score']} score, remove the top "
              f"{options['ss_removal_factor']:g}·ε·N; SR: the max F1 over thresholds (the paper's rule). "
              "In parentheses, for AC and SS the *oracle* F1 (the best labeling or threshold chosen with the "
              "ground truth, a diagnostic, not a defender's decision), for SR its label-free rule (errors above "
              f"the {options['sr_percentile']:g}th percentile of the clean reference's).", ""]
    lines += detection_table(result)
    lines += [f"- {pool['note']}" for pool in result["detection"]["pools"] if "note" in pool]
    variants = variants_table(result)
    if variants:
        lines += ["", "### Every AC and SS form (mean F1 over the pools)", ""] + variants
    return "\n".join(lines) + "\n"


SUMMARY_FIELDS = ["run_name", "data_name", "model_name", "attack_name", "method", "mlmmdr_lamb", "mlmmdr_layer",
                  "ba", "asr"]


def summary_row(result: dict) -> dict:
    """One flat row per run: BA/ASR, ARO and attack MMD² per level, mean headline F1 per detector and level."""
    row = {key: result[key] for key in SUMMARY_FIELDS}
    levels = result["distances"]["levels"]
    for level in LEVELS:
        row[f"aro_{level}"] = result["distances"]["aro"][level]
    for level in LEVELS:
        row[f"mmd2_{level}"] = levels[level]["mmd2"]["attack"]
        row[f"mmd2_intra_{level}"] = levels[level]["mmd2"]["intra"]
    for name in DETECTORS:
        for level in LEVELS:
            values = [p["levels"][level][name]["headline"] for p in result["detection"]["pools"] if p["levels"]]
            row[f"f1_{name}_{level}"] = sum(values) / len(values) if values else None
    return row


def summary_markdown(rows: list) -> str:
    columns = list(rows[0]) if rows else SUMMARY_FIELDS
    lines = ["# Evaluation summary", "",
             "One row per run. ARO and MMD² (benign vs malicious, and intra-class) per level; F1: headline F1 "
             "(each method's own rule as the paper uses it), averaged over the detection pools.", "",
             "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines) + "\n"
