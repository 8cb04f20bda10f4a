"""The adaptive study's runs (the attacks built for latent inseparability) and what C10, C11 and
their section read from them: which runs worked, their mean detection F1 over every registered
detector, and their per-detector differences against ML-MMDR or against the attack alone."""
from defenses import DETECTORS
from experiments.records import Runs, detector_f1, mean_of, mean_sd, metric_of, present

ASR_WORKS = 0.8         # an attack whose ASR is below this hides nothing: it failed
# the attack whose trigger an adaptive attack reshapes: C10 and C11 compare with ML-MMDR on it
BASE_ATTACK = {"adaptive_blend": "blended", "adaptive_patch": "patched", "tact": "patched"}


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


def against(records: list, counterpart) -> list:
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


def mlmmdr_on(runs: Runs, record, attack_names=None) -> list:
    """The main grid's ML-MMDR runs (the claims' λ) of ``record``'s model and seed on ``attack_names``
    (by default every attack the adaptive ones reshape)."""
    c = record["config"]
    attack_names = attack_names or sorted(set(BASE_ATTACK.values()))
    return [runs.pick(c.model_name, attack, "ML-MMDR", seed=c.seed) for attack in attack_names]


def rate(ratio: float) -> str:
    return f"{100 * ratio:g}%"


def summary(records: list) -> str:
    """'F1 …, BA …, ASR …', each mean ± sd over ``records``."""
    return (f"F1 {mean_sd([mean_detection_f1(r) for r in records])}, BA {mean_sd([metric_of(r, 'ba') for r in records])}, "
            f"ASR {mean_sd([metric_of(r, 'asr') for r in records])}")
