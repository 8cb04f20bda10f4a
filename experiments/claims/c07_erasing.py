"""C7 (beyond the paper): does ML-MMDR change how well fine-tuning, NAD and ARGD erase the backdoor?
And the report's erasing section."""
from defenses import display_name
from experiments.claim import NOT_IN_PAPER, Claim, RuleChange, Section, register, seed_unit_change
from experiments.records import Runs, counted, fmt, method_label_of
from experiments.rules import seed_rule_text
from experiments.spread import NOT_RUN
from experiments.tables import figures_of, markdown_table
from metrics.erasing import BA_KEPT as ERASING_BA_KEPT
from metrics.erasing import LAST_EPOCHS, MIN_DEFENSES, MIN_PAIRS, MIN_PAIRS_PER_DEFENSE, erasing_verdict, last_epochs_asr, why_unusable
from metrics.erasing import MARGIN as ERASING_MARGIN
from models import display_name as model_display


def _judged(found: dict) -> str:
    if found["mean"] is None:
        return f"{found['verdict']} ({counted(found['pairs'], 'usable pair')})"
    if found["interval"] is None or found["verdict"].startswith("not established"):
        where = "" if found["interval"] is None else f", 95% t-interval [{found['interval'][0]:+.3f}, {found['interval'][1]:+.3f}]"
        return (f"{found['verdict']} (mean difference {found['mean']:+.3f}{where}, {found['pairs']} pairs: "
                f"{found['reason']})")
    low, high = found["interval"]
    return (f"{found['verdict']} (mean difference {found['mean']:+.3f}, 95% t-interval over {found['seeds']} seeds "
            f"[{low:+.3f}, {high:+.3f}], {found['pairs']} pairs)")


def judge(runs: Runs) -> tuple:
    by_model = {}
    for model, pair in runs.erased_pairs():
        by_model.setdefault(model, []).append(pair)
    verdicts, evidence = [], []
    for model, pairs in by_model.items():
        found = erasing_verdict(pairs)
        verdicts.append(f"{model_display(model)}: {_judged(found['overall'])}")
        evidence.append(f"{model_display(model)}: {found['usable']} of {found['total']} pairs usable; by defense: "
                        + "; ".join(f"{display_name(d)} {_judged(j)}" for d, j in found["by_defense"].items()))
    return "; ".join(verdicts) or NOT_RUN, ". ".join(evidence) or "no erasing result yet"


def cases(runs: Runs) -> list:
    return [pair.difference for _, pair in runs.erased_pairs() if pair.usable]


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


def _defender_share(result: dict) -> str:
    """'500 (5% of the attacker's 10,000)' from an erasing's or a tuning's record of the defender's
    data, which tells the 5% arm from the whole-training-set sensitivity arm; '—' where the record
    predates the share's choice."""
    defender = result.get("defender") or {}
    ratio = (result.get("options") or {}).get("defense_ratio",
                                              ((result.get("erasing_regime") or {}).get("defender_share") or {}).get("ratio"))
    if defender.get("share_of") is None or defender.get("share_base") is None or ratio is None:
        return "—"
    base = "the attacker's" if defender["share_of"] == "attacker" else "the whole"
    return f"{defender['images']:,} ({100 * ratio:g}% of {base} {defender['share_base']:,})"


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
                         _erasing_settings(result), _defender_share(result), _teacher(result),
                         _erased_scores(result["before"]),
                         _erased_scores(result["after"]), fmt(last_epochs_asr(result)),
                         why_unusable(result) or "yes"])
    lines = ["## Erasing the backdoor (beyond the paper: C7)", "",
             f"BA / ASR of the RBT and the ML-MMDR (λ = {runs.lamb:g}) run of each attack and seed before and after "
             "each defense, trained on the defender's clean share (drawn outside the attacker's subset; the "
             "defender column says its size and what it is a share of: 5% of the attacker's training set, or of the "
             "whole training set in the sensitivity arm); the teacher is NAD's and ARGD's fine-tuned model. A run "
             "that sent more than half of the clean test images to one class is marked collapsed: its ASR measures "
             "nothing and it counts in no verdict. Settings marked tuned were chosen on that model's own clean "
             "validation set by the rule of docs/METHODS.md: keep the settings that lose at most 3 points of "
             "correct validation images (exact counts), then take the largest lr, then the largest β.", ""]
    lines += markdown_table(["model", "attack", "defense", "seed", "method", "settings", "defender",
                             "teacher BA / ASR",
                             "before BA / ASR", "after BA / ASR", f"ASR, last {LAST_EPOCHS} epochs", "usable"], rows)
    return lines + [""] + _tuning_table(runs) + figures_of(figures, "erasing")


def _validation_count(found: dict, chosen: dict, tuned: dict) -> str:
    """'835 of 1000 (before 865, floor 835)' from a tuning's exact counts; the accuracies of a
    record written before the counts."""
    if "validation_correct" not in chosen or "floor_correct" not in found:
        return f"{fmt(chosen['validation_accuracy'])} (before {fmt(tuned['before']['validation_accuracy'])})"
    return (f"{chosen['validation_correct']} of {tuned['defender']['validation_images']} (before "
            f"{tuned['before']['validation_correct']}, floor {found['floor_correct']})")


def _tuning_table(runs: Runs) -> list:
    """Each tuned model's choice on its own validation set, the defender's share and the candidates
    run, and the chosen setting's test BA / ASR."""
    rows = []
    for r in runs.records:
        tuned, c = r.get("tune"), r["config"]
        for defense, found in (tuned or {}).get("defenses", {}).items():
            chosen = found["chosen"]
            beta = f", β×{chosen['beta_scale']:g}" if "beta_scale" in chosen else ""
            run_count = len(found["candidates"])
            rows.append([model_display(c.model_name), c.attack_name, c.seed, method_label_of(r), display_name(defense),
                         f"lr {chosen['lr']:g}{beta}", _validation_count(found, chosen, tuned),
                         "yes" if found["rule_met"] else "no: best validation accuracy taken",
                         f"{run_count} of {run_count + len(found.get('skipped', []))}", _defender_share(tuned),
                         _erased_scores(found["test_after"])])
    if not rows:
        return []
    return ["Each tuning's choice on its run's validation set (every erased model, RBT and ML-MMDR on every seed, "
            "is tuned on its own and erased with that choice): correct validation images of the chosen setting, "
            "before the defense and the floor the tolerance allows; the candidates run, strongest first, of the "
            "grid (an ordered search stops at the first kept, the rule's choice); and that setting's test BA / ASR "
            "on the tuned run, measured after the choice:", ""] + markdown_table(
        ["model", "attack", "seed", "method", "defense", "chosen", "validation correct", "rule met",
         "candidates run", "defender", "after BA / ASR"], rows) + [""]


RULE = (f"per model family, over the (attack, defense, seed) pairs where neither erasing collapsed the model (more "
        f"than half the clean test images to one class) and both kept BA within {ERASING_BA_KEPT * 100:.0f} "
        f"points of their BA before it: 'not measurable' with fewer than {MIN_PAIRS} such pairs over at least "
        f"{MIN_DEFENSES} defenses; otherwise, on ML-MMDR's minus RBT's ASR averaged over the last {LAST_EPOCHS} "
        f"epochs, " + seed_rule_text(ERASING_MARGIN, "harder to erase", "easier to erase", "no consistent difference")
        + f". Each defense is judged alike on its own (from {MIN_PAIRS_PER_DEFENSE} pairs)")

CLAIM = register(Claim(
    id="C7",
    statement="New: does ML-MMDR change how well fine-tuning, NAD and ARGD erase the backdoor?",
    paper=NOT_IN_PAPER,
    studies=("erase_reference", "erase_tuned"),
    rule=RULE, judge=judge, cases=cases,
    statistic="ML-MMDR's minus RBT's last-5-epoch ASR after erasing, per usable pair, pooled over "
              "the model families the verdict judges apart",
    margin=f"≥ {ERASING_MARGIN:g} or ≤ −{ERASING_MARGIN:g}", threshold=ERASING_MARGIN, by_seed=False,
    history=(RuleChange("2026-12-01, commit 80c6bc4 (issue 27; the erasing runs changed too)",
                        "judged per model family on usable pairs (no collapse, BA within 5 points), the last-5-epoch "
                        "ASR, a bootstrap interval excluding 0, at least 8 pairs over 2 defenses", True,
                        "over the (attack, defense) pairs where neither run lost more than 10 points of BA: 'harder "
                        "to erase' if ML-MMDR's ASR after erasing is ≥ 0.1 above RBT's in more than half of them",
                        "ML-MMDR is harder to erase, on the 2 of 12 pairs that kept BA"),
             seed_unit_change("VGG-11: easier to erase (mean difference -0.300, 95% interval [-0.406, -0.190], 9 "
                              "pairs); WRN-16-1: not measurable (6 usable pairs)")),
    checks="NAD's attention loss, ARGD's edge loss and its cross-level attention are tested against direct "
           "computations, ARGD's three-phase schedule against the reference's rate per epoch, the collapse label, "
           "the defender's data (5% of the attacker's training-set size, disjoint from the attacker's subset and "
           "from its validation set), the tuning rule (exact counts, a candidate at the floor kept; the largest lr, "
           "then the largest β), its ordered search, each model's own tuning in the grid, and the seed-unit rule on "
           "known inputs (tests/test_erasing.py); the README's digits WRN-16-1 quick "
           "start shows each defense lowering ASR with BA kept. A run that collapsed is marked in the table and "
           "figures and counts in no verdict.",
    sections=(Section(110, lambda report: section_erasing(report.runs, report.figures)),)))
