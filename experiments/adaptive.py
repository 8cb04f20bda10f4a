"""The adaptive study's runs (the attacks built for latent inseparability) and what C10, C11 and
their section read from them: which runs worked, their mean detection F1 over every registered
detector, and their per-detector differences against ML-MMDR or against the attack alone."""
from defenses import DETECTORS
from experiments.records import Runs, detector_f1, mean_of, mean_sd, metric_of, present

ASR_WORKS = 0.8         # an attack whose ASR is below this hides nothing: it failed
# a source-specific attack (TaCT) whose trigger also fires on more than this share of any other class's
# images is not the attack it claims to be: firing for its source classes alone is what lets it slip
# past SCAn
OTHER_CLASSES_FAIL = 0.2
# the attack whose trigger an adaptive attack reshapes: C10 and C11 compare with ML-MMDR on it
BASE_ATTACK = {"adaptive_blend": "blended", "adaptive_patch": "patched", "tact": "patched"}


def mean_detection_f1(record):
    """Mean F1 over every registered detector (detector_f1's single number per detector)."""
    return mean_of([detector_f1(record, d) for d in DETECTORS])


def adaptive_runs(runs: Runs, method: str) -> dict:
    """{(attack, poison ratio): [record, …]} of the adaptive attacks' runs under ``method`` (not the
    study's ML-MMDR runs on the attacks they reshape, which ``mlmmdr_on`` finds)."""
    found = {}
    for r in runs.study("adaptive"):
        c = r["config"]
        if c.method == method and r["evaluation"] and c.attack_name in BASE_ATTACK:
            found.setdefault((c.attack_name, c.poison_ratio), []).append(r)
    return found


def works(record) -> bool:
    """Whether the attack worked: ASR at least ``ASR_WORKS`` and, for a source-specific attack, its
    trigger firing on at most ``OTHER_CLASSES_FAIL`` of the images of every other class (the most in
    one class; the mean over them where a record predates that)."""
    metrics = record.get("metrics") or {}  # only a source-specific attack records these
    other = metrics.get("asr_worst_other_class", metrics.get("asr_other_classes"))
    return (present(metric_of(record, "asr")) and metric_of(record, "asr") >= ASR_WORKS
            and (not present(other) or other <= OTHER_CLASSES_FAIL))


def against(records: list, counterpart) -> dict:
    """{detector: [(seed, difference)]}: each working record's F1 minus that of ``counterpart(record)``
    (a list of records of the same seed, averaged; working ones only), per registered detector."""
    out = {detector: [] for detector in DETECTORS}
    for r in records:
        others = [o for o in counterpart(r) if o and o["evaluation"] and works(o)]
        if not works(r) or not others:
            continue
        for detector in DETECTORS:
            mine, theirs = detector_f1(r, detector), mean_of([detector_f1(o, detector) for o in others])
            out[detector].append((r["config"].seed, mine - theirs if present(mine, theirs) else None))
    return out


def mlmmdr_on(runs: Runs, record, attack_names=None) -> list:
    """The ML-MMDR runs (the claims' λ) of ``record``'s model, seed and poisoning rate on
    ``attack_names`` (by default every attack the adaptive ones reshape): the main grid's at its
    rate, the adaptive study's at the attacks' reference rates. Attacks are compared at equal rates
    only: a rate with no such run gives None."""
    c = record["config"]
    attack_names = attack_names or sorted(set(BASE_ATTACK.values()))
    found = []
    for attack in attack_names:
        main = runs.pick(c.model_name, attack, "ML-MMDR", seed=c.seed)
        candidates = ([main] if main else []) + [
            r for r in runs.study("adaptive") if r["config"].attack_name == attack and r["config"].method == "ML-MMDR"
            and r["config"].model_name == c.model_name and r["config"].seed == c.seed
            and r["config"].mlmmdr_lamb == runs.lamb]
        found.append(next((r for r in candidates if abs(r["config"].poison_ratio - c.poison_ratio) < 1e-12), None))
    return found


def rate(ratio: float) -> str:
    return f"{100 * ratio:g}%"


def summary(records: list) -> str:
    """'F1 …, BA …, ASR …', each mean ± sd over ``records``."""
    return (f"F1 {mean_sd([mean_detection_f1(r) for r in records])}, BA {mean_sd([metric_of(r, 'ba') for r in records])}, "
            f"ASR {mean_sd([metric_of(r, 'asr') for r in records])}")
