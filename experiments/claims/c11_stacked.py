"""C11 (beyond the paper): does ML-MMDR stacked on an adaptive attack hide better than either alone?"""
from attacks import display_name as display_attack
from experiments.adaptive import BASE_ATTACK, adaptive_runs, against, mlmmdr_on, rate, summary
from experiments.claim import NOT_IN_PAPER, Claim, register
from experiments.records import Runs
from experiments.rules import DETECTION_MARGIN, MIN_CASES, interval_text
from experiments.spread import NOT_RUN
from metrics.intervals import NOT_MEASURABLE, paired_verdict


def _alone(runs: Runs, record) -> list:
    """The same adaptive attack under RBT, same rate and seed."""
    c = record["config"]
    return [r for r in runs.study("adaptive") if r["config"].method == "RBT" and r["config"].attack_name == c.attack_name
            and r["config"].poison_ratio == c.poison_ratio and r["config"].seed == c.seed]


def judge(runs: Runs) -> tuple:
    verdicts, evidence = [], []
    for (attack, ratio), records in adaptive_runs(runs, "ML-MMDR").items():
        versus_attack = paired_verdict(against(records, lambda r: _alone(runs, r)), DETECTION_MARGIN, MIN_CASES,
                                       "worse", "better", "no better")
        versus_mmdr = paired_verdict(
            against(records, lambda r: mlmmdr_on(runs, r, [BASE_ATTACK[r["config"].attack_name]])),
            DETECTION_MARGIN, MIN_CASES, "worse", "better", "no better")
        both = {versus_attack["verdict"], versus_mmdr["verdict"]}
        verdict = ("not measurable" if NOT_MEASURABLE in both else "they add up" if both == {"better"} else
                   f"{versus_attack['verdict']} than {display_attack(attack)} alone, {versus_mmdr['verdict']} than "
                   f"ML-MMDR alone")
        verdicts.append(f"{display_attack(attack)} + ML-MMDR at {rate(ratio)}: {verdict}")
        evidence.append(f"{display_attack(attack)} + ML-MMDR at {rate(ratio)}: {summary(records)}; against "
                        f"{display_attack(attack)} alone" + interval_text(versus_attack)
                        + f"; against ML-MMDR on {display_attack(BASE_ATTACK[attack])}" + interval_text(versus_mmdr))
    return "; ".join(verdicts) or NOT_RUN, ". ".join(evidence) or "no stacked run yet"


def cases(runs: Runs) -> list:
    return [d for records in adaptive_runs(runs, "ML-MMDR").values()
            for d in against(records, lambda r: _alone(runs, r))]


CLAIM = register(Claim(
    id="C11",
    statement="New: does ML-MMDR stacked on an adaptive attack hide better than either alone?",
    paper=NOT_IN_PAPER,
    studies=("adaptive", "lambda"),
    rule="for each stacked attack and rate, per (seed, registered detector): its F1 with ML-MMDR minus (a) the "
         "same attack's under RBT and (b) ML-MMDR's on the attack it reshapes (Blended for Adaptive-Blend, Patched "
         "for Adaptive-Patch) at the same poisoning rate; each difference judged as in C10. 'They add up' if it is "
         "better than both. (Changed by issue 42, before its runs: ML-MMDR alone was read at 10% whatever the "
         "stacked attack's rate, and the attack alone trained with Algorithm 1's loss and batching)",
    judge=judge, cases=cases,
    statistic="stacked minus the adaptive attack alone, F1 per seed × detector",
    margin=f"≤ −{DETECTION_MARGIN:g} (better)", threshold=-DETECTION_MARGIN, by_seed=False,
    checks="As C10. The stacked run differs from the adaptive attack alone in λ and in its training: the attacker "
           "who adds the regulariser controls training, so it trains with Algorithm 1's split loss and batching on "
           "the attack's own poisoning, where the attack alone trains as published (run names and records say "
           "which)."))
