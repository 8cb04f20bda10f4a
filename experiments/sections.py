"""The report's own Markdown sections, those no one claim owns: the setting, the verdicts and the
claims tables, and the detail sections on the grid as a whole (the architectures, the seeds, the
loss study, the distances, the paper's scale). One function per section, each returning its lines
(an empty list when the grid has nothing for it); the claims' own sections are in their modules
(experiments/claims/)."""
import statistics

from defenses import PAPER_DETECTORS, display_name
from experiments.grid import STUDIES
from experiments.records import (Runs, distance_of, f1_of, fmt, mean_f1_of, mean_of, mean_sd, method_label_of,
                                 metric_of, mmd_ratio_of, present)
from experiments.spread import describe, seed_agreement
from experiments.tables import markdown_table
from metrics import DISTANCES, METRICS
from models import LEVELS
from models import display_name as model_display


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
    measured = sum(i["wall_s"] for i in invocations) / 3600
    untimed = sorted(name for name, timing in settings["timings"].items() if "train" not in timing)
    summed, last_only = every_attempt(settings)
    lines += ["", f"The command's measured wall time: {measured:.1f} h, over the {len(invocations)} invocation"
                  f"{'s' * (len(invocations) != 1)} that ran stages ({described}; each counted to its last minute). "
                  f"Stage time summed over every invocation, every stage counted: {summed / 3600:.1f} h"
              + (f" ({last_only} of the {len(settings['timings'])} runs ran stages before every attempt was "
                 f"recorded: such a stage that a later invocation ran again counts with its last time only)"
                 if last_only else "")
              + (f"; {len(untimed)} run{'s' * (len(untimed) != 1)} without a recorded training time: "
                 f"{', '.join(untimed)}." if untimed else ".")]
    if settings.get("budget") and invocations:
        lines[-1] += " " + against_budget(settings["budget"], measured, done < settings["stages"][1])
    lines += [""]
    # the median beside the mean: a stage that shared the cores with other work (a test run, a
    # restart's catch-up) inflates the mean, not the median
    lines += markdown_table(["stage", "runs", "total (min)", "per run, mean (min)", "per run, median (min)"],
                            [(stage, len(v), f"{sum(v) / 60:.1f}", f"{statistics.mean(v) / 60:.1f}",
                              f"{statistics.median(v) / 60:.1f}") for stage, v in stages.items()])
    return lines


def every_attempt(settings: dict) -> tuple:
    """(seconds, runs partly counted by their last times): every attempt of every stage (a run's
    stage_runs.json, settings["attempts"]), and for each stage of a run with no attempt on record
    (a run, or a stage, that ran before that record existed) its last time (settings["timings"])."""
    attempts = settings.get("attempts") or {}
    summed, partly = 0.0, 0
    for name in dict.fromkeys([*settings["timings"], *attempts]):
        recorded = attempts.get(name, [])
        summed += sum(attempt["seconds"] for attempt in recorded)
        attempted = {attempt["stage"] for attempt in recorded}
        unrecorded = {stage: seconds for stage, seconds in settings["timings"].get(name, {}).items()
                      if stage not in attempted}
        summed += sum(unrecorded.values())
        partly += bool(unrecorded)
    return summed, partly


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
    """``hours``: the command's measured wall time, against the profile's budget on its cores."""
    text = (f"The {budget['profile']} profile's budget is {budget['hours']:g} h of wall time on {budget['cores']} "
            f"CPU cores; ")
    if partial:
        return text + f"the finished stages have taken {hours:.1f} h of it."
    verdict = ("within it" if hours <= budget["hours"] else f"over it by {hours - budget['hours']:.1f} h")
    return text + f"the command took {hours:.1f} h, {verdict}."


CHANGED_AFTER = " (rule changed after its numbers were seen: see History of rules)"


def changed_after_numbers(judgement) -> bool:
    return any(change.after_numbers for change in judgement.history)


def section_summary(judged: list) -> list:
    """The first screen: each claim's verdict, whether the seeds agree, and the spread of what its rule
    reads. C1–C6 and C8 are the paper's; C7 and C9 onwards are questions the paper could not ask."""
    rows = [(c.id, c.statement, f"**{c.verdict}**{seed_agreement(c.per_seed)}"
             + (CHANGED_AFTER if changed_after_numbers(c) else ""), describe(c.spread)) for c in judged]
    return ["## Verdicts at a glance", "",
            "C1–C6 and C8 are the paper's claims, the others new questions. The seed is the unit: each claim's "
            "statistic is computed per seed, and a verdict stands only where the 95% t-interval over the seeds "
            "clears its rule's margin; otherwise it reads 'not established on N seeds', with the interval or the "
            "reason there is none. Comparisons across detectors count detectors, one verdict each, never a mean "
            "over them.", ""] + markdown_table(
        ["", "claim", "verdict", "across seeds: the rule's statistic, mean ± sd over seeds, and its 95% "
                                 "t-interval over the seeds"], rows)


def section_rule_history(judged: list) -> list:
    """Every change of a claim's rule since its first verdict, oldest first, with the rule and the
    verdict that stood before it (git history holds both); a change made after the claim's numbers
    had been seen says so."""
    rows = [(c.id, change.when, "after" if change.after_numbers else "before", change.change, change.earlier_rule,
             change.earlier_verdict) for c in judged for change in c.history]
    if not rows:
        return []
    return ["## History of rules", "",
            "A rule changed after its numbers were seen can be fitted to them: each such change is listed with the "
            "rule and the verdict it replaced.", ""] + markdown_table(
        ["claim", "when", "after its numbers?", "what changed", "the earlier rule", "the earlier verdict"], rows)


def section_claims(judged: list) -> list:
    lines = ["## Claims", "", "Each rule was fixed before the numbers were read, except where the History of "
             "rules below lists a change made after them; the verdict applies it to the runs below, with the seed "
             "as the unit; 'per seed' gives the verdict on each seed alone where a seed holds enough cases for the "
             "rule.", ""]
    lines += markdown_table(["", "claim", "rule", "verdict", "per seed", "our numbers", "the paper's"],
                    [(c.id, c.statement, c.rule, f"**{c.verdict}**",
                      ", ".join(f"{seed}: {v}" for seed, v in c.per_seed.items()) or "–", c.evidence, c.paper)
                     for c in judged])
    doubtful = [c for c in judged if any(word in c.verdict for word in ("not reproduced", "partly", "not measurable"))]
    if doubtful:
        lines += ["", "Where a claim is not (fully) reproduced or not measurable, what rules out a bug in the computation it reads:", ""]
        lines += [f"- {c.id} ({c.verdict}): {c.checks}" for c in doubtful]
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
    rows = [[model_display(model), result["device"], result["batch_size"], fmt(result["images_per_s"]["plain"], 1)]
            for model, result in speed.items()]
    # a saved timing is reused by later invocations, maybe on another machine: it names its own
    machines = sorted({result.get("machine", "a machine it did not record") for result in speed.values()})
    lines += [f"`benchmarks/train_step.py` timed one ML-MMDR training step of each architecture at full width "
              f"({'; '.join(machines)}). What the grid above costs on GPUs (training, the per-epoch BA/ASR and the "
              "evaluate stage of its 112 runs, on one 8-GPU node and as a Slurm array) is `benchmarks/grid_hours.py`'s "
              "arithmetic: measured with `--device cuda` on the GPU, or estimated from an assumed FLOP rate (README, "
              "'The paper's grid on GPUs').", ""]
    return lines + markdown_table(["architecture", "device", "batch", "images/s"], rows)
