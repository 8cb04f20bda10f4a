"""Markdown rendering of evaluation.json: tables shaped like the paper's TABLE 2 and Figs. 5–7."""
from defenses import DETECTORS, PAPER_DETECTORS, display_name
from evaluation.protocol import EvalOptions
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
    separable = result["distances"].get("separability")
    if separable:
        lines += ["", "Separability without a detector (benign target vs malicious): "
                  + "; ".join(f"{lv} linear-SVM accuracy {_fmt(separable[lv]['svm_accuracy'], 3)} (5-fold), "
                              f"silhouette {_fmt(separable[lv]['silhouette'], 3)}" for lv in LEVELS)]
    return lines


def _auroc(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _beside(scores: dict) -> str:
    """The headline F1 and, in parentheses, the other rule's F1 (the oracle for AC and SS; SR's
    label-free percentile rule for SR, whose headline is the paper's max F1) and the threshold-free
    AUROC of the detector's scores (– where it has none; absent from an evaluation that predates it)."""
    other = "oracle" if scores["headline_rule"] == "own" else "own"
    auroc = f"; AUROC {_auroc(scores['auroc'])}" if "auroc" in scores else ""
    return f"{scores['headline']:.3f} ({other} {scores[other]:.3f}{auroc})"


def detectors_in(result: dict) -> list:
    """The detectors an evaluation ran, in its order (an evaluation.json written before the
    registry holds the paper's three)."""
    return list(result["detection"].get("detectors", PAPER_DETECTORS))


def _display(name: str) -> str:
    return display_name(name) if name in DETECTORS else name.upper()


def detection_table(result: dict) -> list:
    pools = result["detection"]["pools"]
    header = "| method | level | " + " | ".join(f"N={p['N']}, r′={p['ratio']:g}" for p in pools) + " |"
    lines = [header, "|---|---|" + "---|" * len(pools)]
    for name in detectors_in(result):
        on_levels = any(name in p.get("levels", {}).get(level, {}) for p in pools for level in LEVELS)
        on_inputs = any(name in p.get("input_level", {}) for p in pools)
        for level in LEVELS if on_levels else (["input"] if on_inputs else []):
            cells = []
            for pool in pools:
                scores = (pool.get("input_level", {}) if level == "input" else pool["levels"].get(level, {})).get(name)
                cells.append("–" if scores is None else _beside(scores))
            lines.append(f"| {_display(name)} | {level} | " + " | ".join(cells) + " |")
    sizes = ", ".join(f"N={p['N']} r′={p['ratio']:g}: {p['benign']} benign + {p['malicious']} malicious"
                      for p in pools)
    lines += ["", f"Pool sizes used: {sizes}."]
    return lines


def class_level_table(result: dict) -> list:
    """Class-level detectors: each level's flagged classes, whether the target is among them, the
    F1 of the samples flagged inside the target class, and the threshold-free rank of the target's
    statistic among the classes (1 = most anomalous)."""
    class_level = result["detection"].get("class_level", {})
    if not class_level:
        return []
    lines = ["| detector | level | flagged classes | target flagged | others flagged | F1 inside the target "
             "| target's rank |", "|---|---|---|---|---|---|---|"]
    for level in LEVELS:
        for name, verdict in class_level.get(level, {}).items():
            lines.append(f"| {_display(name)} | {level} | {', '.join(map(str, verdict['flagged_classes'])) or 'none'} "
                         f"| {'yes' if verdict['target_flagged'] else 'no'} | "
                         f"{', '.join(map(str, verdict['others_flagged'])) or 'none'} | {verdict['f1_in_target']:.3f} "
                         f"| {_rank(verdict)} |")
    return lines


def _rank(verdict: dict) -> str:
    """'r of n' (and how many classes share the target's value), – where not recorded."""
    rank = verdict.get("target_rank")
    if rank is None:
        return "–"
    ties = verdict.get("target_rank_ties") or 0
    return f"{rank} of {verdict['n_classes']}" + (f" ({ties} tied)" if ties else "")


def variants_table(result: dict) -> list:
    """Every detector form and decision rule evaluation.json holds, mean F1 over the pools; an
    input-level detector's (STRIP's two threshold rules) in the column ``input``."""
    pools = [p for p in result["detection"]["pools"] if p["levels"]]
    if not pools:
        return []
    first, inputs = pools[0]["levels"][LEVELS[0]], pools[0].get("input_level", {})
    rows = [(name, variant, rule, name not in first) for name in detectors_in(result)
            for record in [first.get(name) or inputs.get(name)] if record
            for variant, rules in record["variants"].items() for rule in rules]
    if not rows:
        return []
    columns = LEVELS + (("input",) if any(on_inputs for *_, on_inputs in rows) else ())
    lines = ["| detector | form | rule | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
    for name, variant, rule, on_inputs in rows:
        cells = []
        for column in columns:
            found = [(p.get("input_level", {}) if column == "input" else p["levels"][column]).get(name) for p in pools]
            values = [record["variants"][variant][rule] for record in found if record is not None]
            cells.append(f"{sum(values) / len(values):.3f}" if values and on_inputs == (column == "input") else "–")
        lines.append(f"| {_display(name)} | {variant} | {rule} | " + " | ".join(cells) + " |")
    return lines


def render(result: dict) -> str:
    counts = result["distances"]["counts"]
    lines = [f"# Evaluation of `{result['run_name']}`", "",
             f"{result['method']} (λ = {result['mlmmdr_lamb']:g}, regularised levels "
             f"{'s1, s2, s3' if result['mlmmdr_layer'] == 'all' else 's3'}), "
             f"{result['data_name']} / {result['model_name']} / {result['attack_name']}, target {result['target']}.",
             "", f"BA = {result['ba']:.4f}, ASR = {result['asr']:.4f} (test set)" + (
                 f"; a source-specific attack: the ASR counts its source classes' images, and the other classes' "
                 f"triggered images reach the target at {result['asr_other_classes']:.4f}."
                 if "asr_other_classes" in result else "."), "",
             "## Distributional differences (paper §4, TABLE 2)", "",
             f"Benign target set: {counts['benign_half_a']} (half A) vs {counts['benign_half_b']} (half B) of "
             f"{counts['benign_target_available']} clean test images classified as the target; malicious set: "
             f"{counts['malicious']} of {counts['malicious_available']} triggered non-target test images "
             f"classified as the target; inter-class sets ≤ {result['options']['num_samples']} each.", ""]
    lines += distance_table(result)
    lines += [f"- {note}" for note in result["distances"]["notes"]]
    lines += ["", "## Detection F1 (paper §6.1 and the detectors registered since)", "",
              "Each cell: the headline F1 and, in parentheses, the other rule's and the threshold-free AUROC of the "
              "detector's per-sample scores against the truth (higher = more suspicious; – for AC, whose clusters "
              "give labels, not scores). The headline rules:", ""]
    lines += [f"- {_display(name)}: {_describe(name, result)}" for name in detectors_in(result)]
    lines += ["", "An *oracle* F1 takes the best labeling or threshold chosen with the ground truth: a diagnostic, not "
              "a decision a defender could make.", ""]
    lines += detection_table(result)
    lines += [f"- {pool['note']}" for pool in result["detection"]["pools"] if "note" in pool]
    lines += _below_every_entropy(result)
    classes = class_level_table(result)
    if classes:
        lines += ["", "### Class-level verdicts", ""] + classes
    training = training_set_table(result)
    if training:
        lines += ["", "### Training-set detectors (every row of the poisoned training set as labelled)", ""] + training
    variants = variants_table(result)
    if variants:
        lines += ["", "### Every form and rule (mean F1 over the pools)", ""] + variants
    return "\n".join(lines) + "\n"


def training_set_table(result: dict) -> list:
    """One row per training-set detector (ASSET): the rows it inspected, its rule's F1, AUROC, the
    shares of clean rows flagged (FRR) and of poisoned rows missed (FAR), and each other decision's F1."""
    found = result["detection"].get("training_set", {})
    if not found:
        return []
    lines = ["| detector | rows (poisoned) | F1 | AUROC | FRR | FAR | other decisions' F1 |", "|---|---|---|---|---|---|---|"]
    for name, record in found.items():
        others = ", ".join(f"{rule} {_fmt(f1)}" for rule, f1 in record.get("decisions_f1", {}).items())
        lines.append(f"| {_display(name)} | {record['N']} ({record['poisoned']}) | {_fmt(record['own'])} | "
                     f"{_fmt(record['auroc'])} | {_fmt(record['frr'])} | {_fmt(record['far'])} | {others or '–'} |")
    return lines


def summary_row_training(result: dict, row: dict) -> None:
    """Add each training-set detector's F1 and AUROC to a summary row."""
    for name, record in result["detection"].get("training_set", {}).items():
        row[f"f1_{name}_training"] = record["headline"]
        if record.get("auroc") is not None:
            row[f"auroc_{name}_training"] = record["auroc"]


def _below_every_entropy(result: dict) -> list:
    """A note for each input-level detector whose normal-fit threshold lay below every inspected
    entropy in a pool (STRIP): its rule flagged nothing there, whatever the pool held."""
    lines = []
    for name in detectors_in(result):
        pools = [p for p in result["detection"]["pools"]
                 if (p.get("input_level", {}).get(name) or {}).get("threshold_below_every_entropy")]
        if pools:
            threshold = pools[0]["input_level"][name].get("normal_threshold")
            lines.append(f"- {_display(name)}: the normal-fit threshold ({_fmt(threshold)}) lies below every inspected "
                         f"input's entropy in the pools " + ", ".join(f"N={p['N']} r′={p['ratio']:g}" for p in pools)
                         + ", so the normal-fit rule flags nothing there; the empirical-quantile rule's F1 is in the "
                         "table of every form and rule.")
    return lines


def _describe(name: str, result: dict) -> str:
    """A detector's headline rule in words, from the options the evaluation recorded."""
    if name not in DETECTORS:
        return "not registered here"
    recorded = {key: value for key, value in result["options"].items() if key in EvalOptions.__dataclass_fields__}
    protocol = EvalOptions(**recorded)
    detector = DETECTORS[name]
    options = detector.options(**protocol.detector_options.get(name, {})) if detector.options else None
    return detector.describe(options, protocol)


SUMMARY_FIELDS = ["run_name", "data_name", "model_name", "attack_name", "method", "mlmmdr_lamb", "mlmmdr_layer",
                  "ba", "asr"]


def summary_row(result: dict) -> dict:
    """One flat row per run: BA/ASR, ARO and attack MMD² per level, mean headline F1 per detector and level, and
    beside it the mean AUROC where the detector has one."""
    row = {key: result[key] for key in SUMMARY_FIELDS}
    levels = result["distances"]["levels"]
    for level in LEVELS:
        row[f"aro_{level}"] = result["distances"]["aro"][level]
    for level in LEVELS:
        row[f"mmd2_{level}"] = levels[level]["mmd2"]["attack"]
        row[f"mmd2_intra_{level}"] = levels[level]["mmd2"]["intra"]
    pools = [p for p in result["detection"]["pools"] if p["levels"]]
    for name in detectors_in(result):
        for level in LEVELS + ("input",):
            values = [(p.get("input_level", {}) if level == "input" else p["levels"][level]).get(name) for p in pools]
            values = [value for value in values if value is not None]
            if values:
                row[f"f1_{name}_{level}"] = sum(value["headline"] for value in values) / len(values)
            aurocs = [value["auroc"] for value in values if value.get("auroc") is not None]
            if aurocs:
                row[f"auroc_{name}_{level}"] = sum(aurocs) / len(aurocs)
    summary_row_training(result, row)
    return row


def summary_markdown(rows: list) -> str:
    columns = list(rows[0]) if rows else SUMMARY_FIELDS
    lines = ["# Evaluation summary", "",
             "One row per run. ARO and MMD² (benign vs malicious, and intra-class) per level; F1: headline F1 "
             "(each method's own rule as the paper uses it), averaged over the detection pools; AUROC: the "
             "threshold-free AUROC of each detector's per-sample scores, averaged over the pools where it has one.", "",
             "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines) + "\n"
