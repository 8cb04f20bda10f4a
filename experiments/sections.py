"""The Markdown sections of REPRODUCTION.md after the claims: one function per section, each
returning its lines (an empty list when the grid has nothing for it)."""
import statistics

from defenses import DETECTORS, PAPER_DETECTORS, display_name, target_ranking
from metrics.erasing import LAST_EPOCHS, last_epochs_asr, why_unusable
from experiments.claims import CHECKS
from experiments.claims_extended import CHECKS as EXTENDED_CHECKS
from experiments.claims_extended import PRUNED_ASR, pruning_point
from experiments.spread import describe, seed_agreement
from experiments.grid import STUDIES
from experiments.records import (Runs, aro_of, distance_of, f1_of, f1_variant_of, fmt, mean_f1_of, mean_of, mean_sd,
                                 method_label_of, metric_of, mmd_ratio_of, model_display, pools_of, present)
from metrics import DISTANCES, METRICS
from models import LEVELS

# TABLE 2, CIFAR-10 columns (s1, s2, s3), for the architectures this grid trains.
PAPER_ARO = {("vgg11", "patched"): (2.67, 3.00, 2.67), ("vgg11", "blended"): (2.67, 2.67, 2.67),
             ("vgg11", "sig"): (2.67, 3.00, 3.00), ("vgg11", "warped"): (3.00, 3.00, 3.00),
             ("preactresnet18", "patched"): (2.67, 2.67, 2.00), ("preactresnet18", "blended"): (3.00, 2.67, 3.00),
             ("preactresnet18", "sig"): (3.00, 3.00, 2.00), ("preactresnet18", "warped"): (3.00, 3.00, 2.00)}
ALL_CHECKS = {**CHECKS, **EXTENDED_CHECKS}


def markdown_table(header: list, rows: list) -> list:
    for row in rows:  # a cell too many or too few shifts every value under the wrong heading
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells under {len(header)} headings {header}: {row}")
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def section_setting(settings: dict, runs: Runs) -> list:
    done, total = settings["stages"]
    lines = ["## Setting", "", f"Command: `{settings['command']}`", ""]
    if done < total:
        lines += [f"**Partial report: {done} of {total} stages finished.** The command resumes the rest; until "
                  "then every table and verdict reads only the finished runs, and a dash marks a missing value.", ""]
    lines += [f"- versions (of the command that wrote this report; each run's config.json records the torch and "
              f"Python it trained with): {settings['versions']}", "- machine: " + machines_of(settings)]
    lines += [f"- {key}: {value}" for key, value in settings["facts"].items()]
    if settings.get("cuts"):
        lines += ["- cut to fit the grid's time budget: " + "; ".join(settings["cuts"])]
    lines += [f"- runs: {len(runs.records)} distinct runs in the studies "
              + ", ".join(f"{name} ({len(runs.study(name))})" for name in
                          STUDIES if runs.study(name))]
    stages = {}
    for timing in settings["timings"].values():
        for stage, seconds in timing.items():
            stages.setdefault(stage, []).append(seconds)
    total = sum(sum(v) for v in stages.values())
    invocations = settings.get("invocations", [])
    # as each invocation ran, not as the command writing the report is set (an entry written before
    # invocations.json recorded them says so)
    ran_as = sorted({(i["jobs"], i["threads"] or 0) if "jobs" in i else (0, 0) for i in invocations})
    described = "; ".join(f"CPU threads per run: {threads or 'all cores'}, runs at once: {jobs}" if jobs else
                          "runs at once and threads per run not recorded by an earlier invocation"
                          for jobs, threads in ran_as) or "no invocation ran stages"
    wall = (f"about {total / 3600 / ran_as[0][0]:.1f} h of wall time with {ran_as[0][0]} at once"
            if len(ran_as) == 1 and ran_as[0][0] else "the wall time below")
    lines += ["", f"Wall time per stage, summed over every invocation of the command ({described}): "
                  f"{total / 3600:.1f} h of stage time in all, {wall}. The command's own wall time, over the "
                  f"{len(invocations)} invocation{'s' * (len(invocations) != 1)} that ran stages (each counted to "
                  f"its last minute): {sum(i['wall_s'] for i in invocations) / 3600:.1f} h."]
    if settings.get("budget") and len(ran_as) == 1 and ran_as[0][1]:  # the threads per run are known
        on_budget_cores = total / 3600 * ran_as[0][1] / settings["budget"]["cores"]  # core-hours over its cores
        lines[-1] += " " + against_budget(settings["budget"], on_budget_cores, done < settings["stages"][1])
    lines += [""]
    # the median beside the mean: a stage that shared the cores with other work (a test run, a
    # restart's catch-up) inflates the mean, not the median
    lines += markdown_table(["stage", "runs", "total (min)", "per run, mean (min)", "per run, median (min)"],
                            [(stage, len(v), f"{sum(v) / 60:.1f}", f"{statistics.mean(v) / 60:.1f}",
                              f"{statistics.median(v) / 60:.1f}") for stage, v in stages.items()])
    return lines


def machines_of(settings: dict) -> str:
    """The machines the stages ran on, as each invocation recorded it (host: device, cores, CPU kernels),
    and the one that wrote the report when it differs (where the CPU kernels differ, a run restored
    from the archive keeps its records only if it is the same model bit for bit)."""
    ran_on = list(dict.fromkeys(i["machine"].split(": ", 1)[-1] for i in settings.get("invocations", [])
                                if i.get("machine")))
    if not ran_on:
        return settings["machine"]
    text = "the stages ran on " + "; ".join(ran_on)
    return text if ran_on == [settings["machine"]] else text + f"; this report was written on {settings['machine']}"


def against_budget(budget: dict, hours: float, partial: bool) -> str:
    """``hours``: the stages' core-hours spread over the budget's cores, against the profile's budget.
    A stage counts once, with its last time, so runs retrained only because a session ended without
    their checkpoints (the results archive keeps none) are in the command's own wall time, not here."""
    text = (f"The {budget['profile']} profile is sized for {budget['hours']:g} h of wall time on {budget['cores']} "
            f"CPU cores; ")
    if partial:
        return text + f"the finished stages have taken {hours:.1f} h of it on {budget['cores']} cores."
    verdict = ("within it" if hours <= budget["hours"] else f"over it by {hours - budget['hours']:.1f} h")
    return text + f"this grid's stages took {hours:.1f} h on {budget['cores']} cores, {verdict}."


def section_summary(judged: list) -> list:
    """The first screen: each claim's verdict, whether the seeds agree, and the spread of what its rule
    reads. C1–C6 and C8 are the paper's; C7 and C9–C11 are questions the paper could not ask."""
    rows = [(c.id, c.statement, f"**{c.verdict}**{seed_agreement(c.per_seed)}", describe(c.spread)) for c in judged]
    return ["## Verdicts at a glance", "",
            "C1–C6 and C8 are the paper's claims, C7 and C9–C11 new questions; each verdict pools every seed, under "
            "the rule stated with it in the Claims section below, and says where a seed alone would give another.",
            ""] + markdown_table(
        ["", "claim", "verdict", "across seeds: the rule's statistic, mean ± sd over seeds, and its 95% bootstrap "
                                 "interval"], rows)


def section_claims(judged: list) -> list:
    lines = ["## Claims", "", "Each rule was fixed before the numbers were read, except where it says it was "
             "amended; the verdict applies it to the runs below, every seed pooled; 'per seed' gives the verdict "
             "on each seed alone where a seed holds enough cases for the rule.", ""]
    lines += markdown_table(["", "claim", "rule", "verdict", "per seed", "our numbers", "the paper's"],
                    [(c.id, c.statement, c.rule, f"**{c.verdict}**",
                      ", ".join(f"{seed}: {v}" for seed, v in c.per_seed.items()) or "–", c.evidence, c.paper)
                     for c in judged])
    doubtful = [c for c in judged if any(word in c.verdict for word in ("not reproduced", "partly", "not measurable"))]
    if doubtful:
        lines += ["", "Where a claim is not (fully) reproduced or not measurable, what rules out a bug in the computation it reads:", ""]
        lines += [f"- {c.id} ({c.verdict}): {ALL_CHECKS[c.id]}" for c in doubtful]
    return lines


def section_table2(runs: Runs) -> list:
    """TABLE 2's ARO per model, attack and level under RBT and ML-MMDR, each the mean over the seeds'
    runs (a seed's ARO is itself a mean of three ranks, so seeds that agree give the paper's thirds)."""
    lines = ["## TABLE 2: ARO by model, attack and level", "",
             "ARO = the ascending rank of the benign/malicious distance among it, the intra-class and the nearest "
             "inter-class baseline, averaged over MMD², ED² and SWD₁ (3 = farther than the nearest other class); "
             "each value is the mean over the seeds' runs (seeds: RBT's / ML-MMDR's where they differ). "
             f"ML-MMDR at λ = {runs.lamb:g}; the paper's columns are its CIFAR-10 RBT values.", ""]
    by_cell = {}
    for model, attack, rbt, _, ml in runs.cells():
        by_cell.setdefault((model, attack), []).append((rbt, ml))
    rows = []
    for (model, attack), pairs in by_cell.items():
        paper = PAPER_ARO.get((model, attack), (None,) * 3)
        ml_seeds = sum(ml is not None for _, ml in pairs)  # fewer than RBT's while the grid runs
        seeds = str(len(pairs)) if ml_seeds == len(pairs) else f"{len(pairs)} / {ml_seeds}"
        rows.append([model_display(model), attack, seeds]
                    + [fmt(mean_of([aro_of(rbt, lv) for rbt, _ in pairs]), 2) for lv in LEVELS]
                    + [fmt(mean_of([aro_of(ml, lv) for _, ml in pairs]), 2) for lv in LEVELS]
                    + [fmt(v, 2) for v in paper])
    return lines + markdown_table(["model", "attack", "seeds"] + [f"RBT {lv}" for lv in LEVELS]
                                  + [f"ML-MMDR {lv}" for lv in LEVELS] + [f"paper {lv}" for lv in LEVELS], rows)


def section_lambda(runs: Runs, figures: dict) -> list:
    lines = ["## λ sweep (paper Fig. 3)", "",
             "BA and ASR on the test set after the last epoch; MMD² between the benign and malicious target "
             "representations per level; F1 = the mean headline F1 of AC, SS and SR over levels and pools.", ""]
    rows = []
    for r in runs.main():
        rows.append([model_display(r["config"].model_name), r["config"].attack_name, method_label_of(r), r["config"].seed, fmt(metric_of(r, "ba")),
                     fmt(metric_of(r, "asr"))] + [fmt(distance_of(r, "mmd2", lv)) for lv in LEVELS] + [fmt(mean_f1_of(r))])
    lines += markdown_table(["model", "attack", "method", "seed", "BA", "ASR"] + [f"MMD² {lv}" for lv in LEVELS] + ["F1"],
                            rows)
    unstable = []
    for r in runs.records:
        history = (r["metrics"] or {}).get("history", [])
        measured = [(row["epoch"], row["ba"]) for row in history if row.get("ba") is not None]
        if measured and max(ba for _, ba in measured) - measured[-1][1] > 0.1:
            unstable.append(f"{r['config'].run_name}: BA at epochs " + ", ".join(f"{e} {fmt(ba)}" for e, ba in measured))
    if unstable:
        lines += ["", "Runs whose final BA is more than 0.1 below their best measured BA:", ""]
        lines += [f"- {item}" for item in unstable]
    lines += [""] + figures_of(figures, "sweep")
    return lines


def section_models(runs: Runs, settings: dict) -> list:
    timings = settings["timings"]
    lines = ["## Two architectures at comparable cost", ""]
    rows = []
    for model in runs.models():
        trained = [timings.get(r["config"].run_name, {}).get("train") for r in runs.main()
                   if r["config"].model_name == model]
        widths = {r["config"].width for r in runs.main() if r["config"].model_name == model}
        timed = [t for t in trained if t]
        rows.append([model_display(model), ", ".join(f"{w:g}" for w in sorted(widths)), len(timed),
                     fmt(mean_of([t / 60 for t in timed]), 1)])
    lines += markdown_table(["model", "width", "runs timed", "mean training time (min)"], rows)
    return lines


def section_distances(runs: Runs) -> list:
    lines = ["## Distances (paper App. B)", "",
             "Rows: each method's benign-vs-malicious distance, then the RBT run's intra-class and nearest "
             "inter-class baselines."]
    header = [f"{DISTANCES[m].display} {lv}" for m in METRICS for lv in LEVELS]
    for model in runs.models():
        for attack in runs.attacks(model):
            records = [r for r in runs.main() if (r["config"].model_name, r["config"].attack_name) == (model, attack)]
            rows = [[method_label_of(r)] + [fmt(distance_of(r, m, lv)) for m in METRICS for lv in LEVELS] for r in records]
            base = runs.pick(model, attack, "RBT")
            rows += [[name] + [fmt(distance_of(base, m, lv, key)) for m in METRICS for lv in LEVELS]
                     for key, name in (("intra", "intra-class (RBT)"), ("inter", "inter-class min (RBT)"))]
            lines += ["", f"### {model_display(model)}, {attack}", ""] + markdown_table([""] + header, rows)
    return lines


def section_detection(runs: Runs, figures: dict) -> list:
    """The paper's detectors' F1 per model, attack, method and level, each the mean over the seeds'
    runs (the figures below draw the base seed's)."""
    by_method = {}
    for r in runs.main():
        c = r["config"]
        by_method.setdefault((c.model_name, c.attack_name, method_label_of(r)), []).append(r)
    lines = []
    for rule, title in (("headline", "headline: each method's own rule as the paper uses it (SR: max F1 over "
                                     "thresholds)"),
                        ("oracle", "oracle diagnostic: the best labeling / threshold chosen with the ground truth")):
        rows = [[model_display(model), attack, label, sum(bool(r["evaluation"]) for r in records)]
                + [fmt(mean_of([f1_of(r, d, lv, rule) for r in records])) for d in PAPER_DETECTORS for lv in LEVELS]
                for (model, attack, label), records in by_method.items()]
        lines += ["", f"## Detection F1, {title} (paper §6.1, Figs. 5–7)", "",
                  "Mean over the pools (N, r′) and over the seeds' evaluated runs (seeds: how many).", ""]
        lines += markdown_table(["model", "attack", "method", "seeds"]
                                + [f"{display_name(d)} {lv}" for d in PAPER_DETECTORS for lv in LEVELS], rows)
    return lines + [""] + figures_of(figures, "detection")


def sensitivity_rows(runs: Runs) -> list:
    """(detector, form or None, rule, label) for every detector, form and rule the evaluations
    store, in the registry's order: the headline rule first, then every variant. Derived from
    evaluation.json and the registry, so a detector added later gets its rows, and no rule is
    restated here."""
    record = next((r for r in runs.records if r["evaluation"] and pools_of(r)), None)
    if record is None:
        return []
    detection = record["evaluation"]["detection"]
    first = pools_of(record)[0]["levels"][LEVELS[0]]
    rows = []
    for name in detection.get("detectors", PAPER_DETECTORS):
        if name not in first:
            continue
        entry, label = first[name], display_name(name) if name in DETECTORS else name
        headline = entry["headline_rule"]
        other = "oracle" if headline == "own" else "own"
        rows += [(name, None, headline, f"{label}: its headline rule ({headline})"),
                 (name, None, other, f"{label}: {other}")]
        rows += [(name, form, rule, f"{label}, {form}, {rule}") for form, rules in entry["variants"].items()
                 for rule in rules]
    return rows


def section_sensitivity(runs: Runs) -> list:
    lines = ["## Detector sensitivity", "",
             f"Mean F1 over attacks, seeds, levels and pools of RBT and ML-MMDR (λ = {runs.lamb:g}) under every "
             "detector, form and decision rule that evaluation.json stores, so the reader sees how much C4 (which "
             "rests on AC, SS and SR) depends on the detector's configuration.", ""]
    header, rows = ["detector configuration"], []
    for model in runs.models():
        header += [f"{model_display(model)} RBT", f"{model_display(model)} ML-MMDR", "drop"]
    pairs = {model: [(rbt, ml) for m, _, rbt, _, ml in runs.cells() if m == model and ml] for model in runs.models()}
    for detector, form, decision, label in sensitivity_rows(runs):
        def value(record):
            if form is None:  # the headline form: its own rule and the oracle are top-level entries
                return mean_of([f1_of(record, detector, lv, decision) for lv in LEVELS])
            return mean_of([f1_variant_of(record, detector, lv, form, decision) for lv in LEVELS])
        row = [label]
        for model in runs.models():
            a, b = mean_of([value(r) for r, _ in pairs[model]]), mean_of([value(m) for _, m in pairs[model]])
            row += [fmt(a), fmt(b), fmt(a - b) if present(a, b) else "–"]
        rows.append(row)
    return lines + markdown_table(header, rows)


def section_kernels(runs: Runs) -> list:
    """One seed's kernel study (the report passes the base seed's runs; C6 reads every seed)."""
    pairs = runs.kernel_rows()
    if not pairs:
        return []
    rbt, rows = pairs[0][0], [r for _, r in pairs]
    lines = ["## Kernels (paper §6.3, TABLE 3, Fig. 11)", "",
             f"ML-MMDR at λ = {runs.lamb:g} on {rows[0]['config'].attack_name} with each kernel, seed "
             f"{rows[0]['config'].seed}; the first row is the RBT run. F1: headline, mean over the pools.", ""]
    table = []
    for r in ([rbt] if rbt else []) + rows:
        name = "RBT" if r is rbt else r["config"].kernel.upper()
        table.append([name, fmt(metric_of(r, "ba")), fmt(metric_of(r, "asr"))]
                     + [fmt(distance_of(r, "mmd2", lv)) for lv in LEVELS]
                     + [fmt(f1_of(r, d, lv)) for d in PAPER_DETECTORS for lv in LEVELS])
    return lines + markdown_table(["kernel", "BA", "ASR"] + [f"MMD² {lv}" for lv in LEVELS]
                          + [f"{display_name(d)} {lv}" for d in PAPER_DETECTORS for lv in LEVELS], table)


def section_seeds(runs: Runs) -> list:
    """RBT against ML-MMDR on every seed, for each model and attack of the main grid."""
    rows = []

    def values(rbt, ml):
        return ([mmd_ratio_of(ml, rbt, lv) for lv in LEVELS]
                + [mean_f1_of(rbt) - mean_f1_of(ml) if present(mean_f1_of(rbt), mean_f1_of(ml)) else None,
                   metric_of(ml, "ba") - metric_of(rbt, "ba"), metric_of(ml, "asr") - metric_of(rbt, "asr")])
    for model in runs.models():
        for attack in runs.attacks(model):
            found = [values(rbt, ml) for m, a, rbt, _, ml in runs.cells() if (m, a) == (model, attack) and ml]
            if len(found) < 2:
                continue
            rows.append([model_display(model), attack, len(found)] + [mean_sd(column) for column in zip(*found)])
    if not rows:
        return []
    columns = [f"MMD² ratio {lv}" for lv in LEVELS] + ["F1 drop", "ΔBA", "ΔASR"]
    return ["## Seeds", "",
            f"RBT against ML-MMDR (λ = {runs.lamb:g}) for each model and attack, mean ± sd over seeds (the seed drives "
            "the subset, the poisoned images, the initialisation, the batches and the evaluation's samples). Ratio = "
            "ML-MMDR's MMD² over RBT's; F1 drop = RBT's mean headline F1 minus ML-MMDR's; Δ = ML-MMDR − RBT.", ""
            ] + markdown_table(["model", "attack", "seeds"] + columns, rows)


def section_loss(runs: Runs) -> list:
    records = [r for r in runs.study("loss") if r["evaluation"]]
    if not records:
        return []
    names = {"split": "split: L1 + L2 (Algorithm 1, default)", "pooled": "pooled: one CE over the batch (prototype)"}
    rows = [[names.get(r["config"].ce_reduction, r["config"].ce_reduction), fmt(metric_of(r, "ba")), fmt(metric_of(r, "asr"))]
            + [fmt(distance_of(r, "mmd2", lv)) for lv in LEVELS] + [fmt(mean_of([f1_of(r, d, lv) for lv in LEVELS]))
                                                                 for d in PAPER_DETECTORS] for r in records]
    return ["## Split against pooled loss", "",
            f"The {records[0]['config'].attack_name} ML-MMDR run (λ = {runs.lamb:g}) with each form of the "
            "cross-entropy; F1 = mean headline F1 over levels and pools.", ""] + markdown_table(
        ["loss", "BA", "ASR"] + [f"MMD² {lv}" for lv in LEVELS] + [f"{display_name(d)} F1" for d in PAPER_DETECTORS], rows)


def section_defenses(runs: Runs, figures: dict) -> list:
    defended = [r for r in runs.main() if r["nc"] or r["prune"]]
    if not defended:
        return []
    rows = []
    for r in defended:
        nc, prune = r["nc"], r["prune"]
        target = r["config"].target
        ranking = target_ranking(nc["norms"], target) if nc else {}
        point = pruning_point(prune)
        rows.append([model_display(r["config"].model_name), r["config"].attack_name, method_label_of(r), r["config"].seed,
                     fmt(nc["norms"][target], 1) if nc else "–", ranking.get("target_l1_rank", "–"),
                     fmt(ranking.get("target_l1_ratio_to_median"), 2), fmt(nc["target_anomaly_index"], 2) if nc else "–",
                     f"{max(nc['epochs'])} ({fmt(nc['seconds'] / 60, 1)} min)" if nc else "–",
                     fmt(point["ratio"], 2) if point else "never", fmt(point["ba"]) if point else "–"])
    lines = ["## Neural Cleanse and pruning (paper §6.2, Figs. 8–10)", ""]
    lines += markdown_table(["model", "attack", "method", "seed", "target ‖m‖₁", "its rank (1 = smallest)", "ratio to the others' median",
                     "target anomaly index", "NC epochs (time)", f"pruned ratio where ASR < {PRUNED_ASR:g}", "BA there"], rows)
    return lines + _pruned_to_the_end(defended) + [""] + figures_of(figures, "nc_norms") + figures_of(figures, "prune_curves")


def _pruned_to_the_end(defended: list) -> list:
    """A note on the runs whose ASR fell below PRUNED_ASR only with every s3 channel pruned, so a reader
    does not take a pruned-out model's constant output for pruning working."""
    whole = [r for r in defended if (pruning_point(r["prune"]) or {}).get("ratio") == 1.0]
    if not whole:
        return []
    names = "; ".join(f"{model_display(r['config'].model_name)} {r['config'].attack_name} {method_label_of(r)} "
                      f"seed {r['config'].seed} ({r['prune']['layer']}, ranked by '{r['prune']['rank']}')" for r in whole)
    # only App. A's PreActResNet-18 pools its s3 without a ReLU, so only there does this reason apply
    signed = any(r["config"].model_name == "preactresnet18" for r in whole)
    why = (f" A possible reason, which the diagnostic below tests: {model_display('preactresnet18')}'s s3 (App. A) is the last block's "
           "sum, pooled with no ReLU before it, so a channel can carry the trigger through a negative activation, "
           "which pruning by the largest mean activation on triggered inputs removes last." if signed else "")
    return ["", f"ASR stayed at {PRUNED_ASR:g} or above until every s3 channel was pruned, where the output is a "
                f"constant and BA is chance, on: {names}. There pruning did not remove the backdoor at any ratio short "
                f"of the whole layer.{why}"]


def _erased_scores(scores: dict) -> str:
    """'BA / ASR', with the collapse in place of an ASR that measures nothing."""
    if scores.get("collapsed_to_class") is not None:
        return f"{fmt(scores['ba'])} / collapsed (→ {scores['collapsed_to_class']}, {100 * scores['top_class_share']:.0f}%)"
    return f"{fmt(scores['ba'])} / {fmt(scores['asr'])}"


def _erasing_settings(result: dict) -> str:
    """'lr 0.1→0.01 at 2, β×1' from the options a defense ran with (a tuned choice already applied)."""
    options = result.get("options", {})
    lrs = [lr * options.get("lr_scale", 1.0) for lr in options.get("lrs", [])]
    shown = "lr " + "→".join(f"{lr:g}" for lr in lrs)
    if options.get("lr_epochs"):
        shown += " at " + ",".join(map(str, options["lr_epochs"]))
    beta = options.get("beta_scale")
    return shown + (f", β×{beta:g}" if beta is not None else "") + (" (tuned)" if result.get("tuned") else "")


def _teacher(result: dict) -> str:
    return _erased_scores(result["teacher"]) if isinstance(result.get("teacher"), dict) else "—"


def section_erasing(runs: Runs, figures: dict) -> list:
    pairs = runs.erased_pairs()
    if not pairs:
        return []
    rows = []
    for model, pair in pairs:
        for method, result in (("RBT", pair.rbt), ("ML-MMDR", pair.mlmmdr)):
            rows.append([model_display(model), pair.attack, display_name(pair.defense), pair.seed, method,
                         _erasing_settings(result), _teacher(result), _erased_scores(result["before"]),
                         _erased_scores(result["after"]), fmt(last_epochs_asr(result)),
                         why_unusable(result) or "yes"])
    lines = ["## Erasing the backdoor (beyond the paper: C7)", "",
             f"BA / ASR of the RBT and the ML-MMDR (λ = {runs.lamb:g}) run of each attack and seed before and after "
             "each defense, trained on the defender's clean share of the training set (drawn outside the attacker's "
             "subset); the teacher is NAD's and ARGD's fine-tuned model. A run that sent more than half of the clean "
             "test images to one class is marked collapsed: its ASR measures nothing and it counts in no verdict. "
             "Settings marked tuned were chosen on the RBT model's clean validation set by the rule of "
             "docs/METHODS.md and applied unchanged to the ML-MMDR model.", ""]
    lines += markdown_table(["model", "attack", "defense", "seed", "method", "settings", "teacher BA / ASR",
                             "before BA / ASR", "after BA / ASR", f"ASR, last {LAST_EPOCHS} epochs", "usable"], rows)
    return lines + [""] + _tuning_table(runs) + figures_of(figures, "erasing")


def _tuning_table(runs: Runs) -> list:
    """Each tuned model's own choice and its test BA / ASR: the sensitivity check of choosing per
    model rather than on the RBT model."""
    rows = []
    for r in runs.records:
        tuned, c = r.get("tune"), r["config"]
        for defense, found in (tuned or {}).get("defenses", {}).items():
            chosen = found["chosen"]
            beta = f", β×{chosen['beta_scale']:g}" if "beta_scale" in chosen else ""
            rows.append([model_display(c.model_name), c.attack_name, c.seed, method_label_of(r), display_name(defense),
                         f"lr {chosen['lr']:g}{beta}", f"{fmt(chosen['validation_accuracy'])} (before "
                         f"{fmt(tuned['before']['validation_accuracy'])})",
                         "yes" if found["rule_met"] else "no: best validation accuracy taken",
                         _erased_scores(found["test_after"])])
    if not rows:
        return []
    return ["Each tuning's choice on its run's validation set (the grid tunes on the first seed's RBT run of "
            "each erased attack and applies that choice to both methods on every seed), and that setting's test "
            "BA / ASR on the tuned run, measured after the choice:", ""] + markdown_table(
        ["model", "attack", "seed", "method", "defense", "chosen", "validation accuracy", "rule met",
         "after BA / ASR"], rows) + [""]


def _grid_cost(speed: dict) -> str:
    """What the grid hours count, worded from the benchmark's own ``cifar10_grid`` (the training set
    differs per attack: WaNet's noise images), so the text cannot disagree with the number."""
    grid = next((result["cifar10_grid"] for result in speed.values() if "cifar10_grid" in result), None)
    if grid is None:
        return "the CIFAR-10 grid of that architecture (each run's epochs × its attack's training set),"
    by_size = {}
    for attack, size in grid["training_images"].items():
        by_size.setdefault(size, []).append(attack)
    named = [", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0] for names in by_size.values()]
    sizes = ", ".join(f"{size:,} images for {names}" for size, names in zip(by_size, named))
    return (f"the {grid['runs']} CIFAR-10 runs of that architecture ({grid['runs_per_attack']} per attack, "
            f"{grid['epochs']} epochs each) on their attack's training set of {grid['train_images']:,} images plus the "
            f"poisoned copies and any noise-mode images (WaNet's): {sizes},")


def section_scale(settings: dict) -> list:
    lines = ["## At the paper's scale", "",
             "The paper's CIFAR-10 grid (4 architectures × 4 attacks × 7 trainings, 100 epochs) runs as a Slurm "
             "array, one task per run, each resuming if preempted:", "", "```bash",
             "python experiments/sweep.py --data_name cifar10 --model_name vgg11 resnet18 preactresnet18 vgg16 \\",
             "    --attack_name patched blended sig warped --mlmmdr_lamb 0 0.1 0.2 0.3 --mlmmdr_layer all last \\",
             "    --flags \"--data_path data --amp --channels_last\" --stages train evaluate \\",
             "    --executor slurm --slurm_partition gpu --slurm_gpus 1 --slurm_time 720 --jobs 32", "```", "",
             "CelebA: the same with `--data_name celeba` (40 epochs by default). One run over several GPUs:", "",
             "```bash", "torchrun --nproc_per_node 4 main.py --data_name cifar10 --data_path data "
             "--model_name preactresnet18 --attack_name blended --mlmmdr_lamb 0.3 --sync_bn --amp --channels_last",
             "```", ""]
    speed = settings.get("benchmark") or {}
    if not speed:
        return lines + ["No step was timed (`--no_benchmark`)."]
    rows = [[model_display(model), result["device"], result["batch_size"], fmt(result["images_per_s"]["plain"], 1),
             fmt(result["cifar10_grid_hours"], 1)] for model, result in speed.items()]
    # a saved timing is reused by later invocations, maybe on another machine: it names its own
    machines = sorted({result.get("machine", "a machine it did not record") for result in speed.values()})
    lines += [f"`benchmarks/train_step.py` timed one ML-MMDR step of each architecture at full width "
              f"({'; '.join(machines)}); its `cifar10_grid_hours` is {_grid_cost(speed)} at that rate: device-hours "
              "on this device (core-hours on a CPU). On a GPU, `python benchmarks/train_step.py --device cuda "
              "--model_name <model>` gives the GPU-hours.", ""]
    return lines + markdown_table(["architecture", "device", "batch", "images/s", "CIFAR-10 grid hours"], rows)


def figures_of(figures: dict, kind: str) -> list:
    lines = []
    for caption, path in figures.items():
        if caption.endswith(f": {kind}"):
            lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
    return lines
