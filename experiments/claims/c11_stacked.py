"""C11 (beyond the paper): does ML-MMDR stacked on an adaptive attack hide better than either alone?"""
from attacks import display_name as display_attack
from defenses import display_name
from experiments.adaptive import BASE_ATTACK, adaptive_runs, against, mlmmdr_on, rate, summary
from experiments.claim import NOT_IN_PAPER, Claim, RuleChange, register, seed_unit_change
from experiments.records import Runs
from experiments.rules import DETECTION_MARGIN, by_detector, flattened, measured_tally, per_detector
from experiments.spread import NOT_RUN
from metrics.intervals import NOT_MEASURABLE


def _alone(runs: Runs, record) -> list:
    """The same adaptive attack under RBT, same rate and seed."""
    c = record["config"]
    return [r for r in runs.study("adaptive") if r["config"].method == "RBT" and r["config"].attack_name == c.attack_name
            and r["config"].poison_ratio == c.poison_ratio and r["config"].seed == c.seed]


def judge(runs: Runs) -> tuple:
    verdicts, evidence = [], []
    for (attack, ratio), records in adaptive_runs(runs, "ML-MMDR").items():
        versus_attack = by_detector(against(records, lambda r: _alone(runs, r)), "worse", "better", "no better")
        versus_mmdr = by_detector(
            against(records, lambda r: mlmmdr_on(runs, r, [BASE_ATTACK[r["config"].attack_name]])),
            "worse", "better", "no better")
        both = [found["verdict"] for found in (*versus_attack.values(), *versus_mmdr.values())
                if found["verdict"] != NOT_MEASURABLE]
        added = "they add up, " if both and set(both) == {"better"} else ""
        verdicts.append(f"{display_attack(attack)} + ML-MMDR at {rate(ratio)}: " + (
            f"{added}against {display_attack(attack)} alone, {measured_tally(versus_attack, display_name, True)}; "
            f"against ML-MMDR alone, {measured_tally(versus_mmdr, display_name, True)}" if both else NOT_MEASURABLE))
        evidence.append(f"{display_attack(attack)} + ML-MMDR at {rate(ratio)}: {summary(records)}; against "
                        f"{display_attack(attack)} alone: {per_detector(versus_attack, display_name)}; against "
                        f"ML-MMDR on {display_attack(BASE_ATTACK[attack])}: {per_detector(versus_mmdr, display_name)}")
    return "; ".join(verdicts) or NOT_RUN, ". ".join(evidence) or "no stacked run yet"


def cases(runs: Runs) -> list:
    return [d for records in adaptive_runs(runs, "ML-MMDR").values()
            for d in flattened(against(records, lambda r: _alone(runs, r)))]


CLAIM = register(Claim(
    id="C11",
    statement="New: does ML-MMDR stacked on an adaptive attack hide better than either alone?",
    paper=NOT_IN_PAPER,
    studies=("adaptive", "lambda"),
    rule="for each stacked attack and rate, per (seed, registered detector): its F1 with ML-MMDR minus (a) the "
         "same attack's under RBT and (b) ML-MMDR's on the attack it reshapes (Blended for Adaptive-Blend, Patched "
         "for Adaptive-Patch) at the same poisoning rate; each difference judged as in C10, per detector, and the "
         "verdict counts detectors; 'they add up' if every detector finds it better than both. (Changed by issue 42, before its runs: ML-MMDR alone was read at 10% whatever the "
         "stacked attack's rate, and the attack alone trained with Algorithm 1's loss and batching)",
    judge=judge, cases=cases,
    statistic="stacked minus the adaptive attack alone, F1 per seed × detector",
    margin=f"≤ −{DETECTION_MARGIN:g} (better)", threshold=-DETECTION_MARGIN, by_seed=False,
    history=(RuleChange("2026-12-07, commit b0fd389 (issue 42)", "ML-MMDR alone read at the stacked attack's "
                        "rate, not at 10% (before the rerun, after v3's numbers)", True,
                        "ML-MMDR alone read at 10% whatever the stacked attack's rate",
                        "Adaptive-Blend + ML-MMDR at 10%: better than Adaptive-Blend alone, no better than ML-MMDR "
                        "alone; at 0.3%: no better than Adaptive-Blend alone, worse than ML-MMDR alone (Adaptive-Patch "
                        "alike)"),
             seed_unit_change("as above",
                              ", over seeds × detectors")),
    checks="As C10. The stacked run differs from the adaptive attack alone in λ and in its training: the attacker "
           "who adds the regulariser controls training, so it trains with Algorithm 1's split loss and batching on "
           "the attack's own poisoning, where the attack alone trains as published (run names and records say "
           "which)."))
