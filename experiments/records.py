"""The grid's run records, and the lookups and number formatting every part of the report shares.

A record is one run's files as `experiments/reproduce.py` read them: ``config`` (a RunConfig),
``studies``, ``metrics`` (metrics.json), ``evaluation`` (evaluation.json), ``nc``, ``prune`` and
one entry per erasing defense, each None until that stage has finished. Every accessor returns
None for a missing value, and :func:`fmt` prints None as a dash, so a partial grid renders.
"""
import statistics

from defenses import DETECTORS, ERASERS, PAPER_DETECTORS
from evaluation.protocol import TRAINING_CLASS_DETECTORS
from metrics.erasing import Pair
from models import LEVELS
from visualization.common import method_label

def counted(count: int, noun: str) -> str:
    """'1 case', '3 cases': a count with its noun in the right number."""
    return f"{count} {noun}{'s' * (count != 1)}"


def fmt(value, digits: int = 3) -> str:
    if value is None or value != value:
        return "–"
    # below the last shown decimal, scientific notation keeps a small MMD² from reading as 0
    return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"


def mean_sd(values, digits: int = 3) -> str:
    values = [v for v in values if v is not None and v == v]
    if not values:
        return "–"
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    shown = fmt(mean, digits)
    # an sd beside a mean written to `digits` decimals is written to as many ("1.000 ± 0.001"), not in
    # scientific notation; a mean small enough for that notation keeps it for both
    return f"{shown} ± {fmt(sd, digits) if 'e' in shown else f'{sd:.{digits}f}'}"


def mean_of(values):
    values = [v for v in values if v is not None and v == v]
    return statistics.mean(values) if values else None


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def method_label_of(record) -> str:
    return method_label(record["config"].method, record["config"].mlmmdr_lamb)


def pools_of(record, size=None, ratio=None) -> list:
    evaluation = record["evaluation"] if record else None
    if not evaluation:
        return []
    return [pool for pool in evaluation["detection"]["pools"] if pool["levels"]
            and (size is None or pool["N"] == size) and (ratio is None or pool["ratio"] == ratio)]


def f1_of(record, detector: str, level: str, rule: str = "headline", size=None, ratio=None):
    """Mean F1 over the record's pools (or the one pool N=size, r′=ratio) under ``rule`` (or, with
    ``rule="auroc"``, the AUROC, None where an evaluation predates it)."""
    return mean_of([pool["levels"][level][detector].get(rule) for pool in pools_of(record, size, ratio)])


def f1_variant_of(record, detector: str, level: str, form: str, decision: str):
    return mean_of([pool["levels"][level][detector]["variants"][form][decision] for pool in pools_of(record)])


def mean_f1_of(record, rule: str = "headline"):
    """Mean F1 over AC, SS, SR, the three levels and the pools."""
    return mean_of([f1_of(record, d, lv, rule) for d in PAPER_DETECTORS for lv in LEVELS])


def detector_f1(record, detector: str, level: str = None, rule: str = "headline", protocol: str = "regime"):
    """One number per registered detector, the same for every kind, mean over levels (or at
    ``level``) and pools: the headline F1 of a pool or feature-map detector; STRIP's, which reads
    inputs, not a level; a class-level detector's (SCAn, Beatrix's class test) F1 inside the
    target class where it flagged the target, and 0 where it did not (it found nothing there).
    ``rule="oracle"``: the F1 at the best threshold on the detector's score instead (None for a
    class-level detector, which has no score over inputs).

    ``protocol="regime"`` reads a detector whose reference inspects one whole training class
    (SPECTRE: evaluation.protocol.TRAINING_CLASS_DETECTORS) there, in its own regime (None where
    the evaluation did not run it so); ``protocol="pools"`` reads every detector on the
    evaluation's pools."""
    evaluation = record["evaluation"] if record else None
    if not evaluation:
        return None
    levels = [level] if level else LEVELS
    if protocol == "regime" and detector in TRAINING_CLASS_DETECTORS:
        found = (evaluation["detection"].get("training_class") or {}).get("levels", {})
        return mean_of([found[lv][detector].get(rule) for lv in levels if detector in found.get(lv, {})])
    if DETECTORS[detector].consumes == "classes":
        if rule != "headline":
            return None
        found = [_class_level(record, detector, lv) for lv in levels]
        return mean_of([(f["f1_in_target"] if f["target_flagged"] else 0.0) for f in found if f])
    if DETECTORS[detector].consumes == "training":
        found = (evaluation["detection"].get("training_set") or {}).get(detector)
        return found.get(rule) if found else None
    if DETECTORS[detector].consumes == "inputs":
        return mean_of([pool["input_level"][detector].get(rule) for pool in pools_of(record)
                        if detector in pool.get("input_level", {})])
    return mean_of([f1_of(record, detector, lv, rule) for lv in levels
                    if pools_of(record) and all(detector in pool["levels"][lv] for pool in pools_of(record))])


def threshold_free(record, detector: str):
    """The detector's threshold-free score beside its rule's F1, mean over levels and pools as
    detector_f1 reads them: the AUROC of its per-sample scores, or for a class-level detector the
    target's rank among the classes (1 = most anomalous). None where the record predates it
    (evaluations before issue 44) or the detector gives no per-sample score (AC)."""
    if DETECTORS[detector].consumes == "classes":
        found = [_class_level(record, detector, lv) for lv in LEVELS]
        return mean_of([f.get("target_rank") for f in found if f])
    return detector_f1(record, detector, rule="auroc")


def scored(records: list, detector: str) -> str:
    """'F1 mean ± sd (AUROC …)' of ``detector`` over ``records``: its rule's number (detector_f1)
    with its threshold-free score beside it (threshold_free: the AUROC, or a class-level detector's
    target rank), where the records hold one."""
    shown = mean_sd([detector_f1(record, detector) for record in records])
    free = mean_of([threshold_free(record, detector) for record in records])
    if free is None:
        return shown
    return shown + f" ({'rank' if DETECTORS[detector].consumes == 'classes' else 'AUROC'} {fmt(free)})"


def _class_level(record, detector: str, level: str):
    """A class-level detector's result at ``level`` (None: not run)."""
    evaluation = record["evaluation"] if record else None
    return evaluation["detection"].get("class_level", {}).get(level, {}).get(detector) if evaluation else None


def target_flagged(record, detector: str, level: str):
    """Whether a class-level detector flagged the target class at ``level`` (None: not run)."""
    found = _class_level(record, detector, level)
    return found["target_flagged"] if found else None


def flagged_beyond_size(record, detector: str, level: str):
    """Whether a class-level detector flagged the target at ``level`` where its size-only control
    (the same class counts, the poisoned rows replaced by clean target images) did not: None where
    not run or recorded before the control existed."""
    found = _class_level(record, detector, level)
    return found.get("flagged_beyond_size") if found else None


def class_statistic(record, detector: str, level: str, target: bool = True):
    """A class-level detector's statistic at ``level`` for the target class (``target``) or the largest
    of the other classes', with its threshold: (statistic, threshold), or None where it did not run."""
    found = _class_level(record, detector, level)
    if not found:
        return None
    key = str(record["evaluation"]["target"])
    values = found["statistic"]
    chosen = values[key] if target else max(v for k, v in values.items() if k != key)
    return chosen, found["threshold"]


def separability_of(record, level: str, key: str = "svm_accuracy"):
    """The detector-free separability of benign and malicious target representations at ``level``."""
    evaluation = record["evaluation"] if record else None
    found = (evaluation["distances"].get("separability") or {}).get(level) if evaluation else None
    return found.get(key) if found else None


def distance_of(record, metric: str, level: str, key: str = "attack"):
    evaluation = record["evaluation"] if record else None
    return evaluation["distances"]["levels"][level][metric][key] if evaluation else None


def aro_of(record, level: str):
    evaluation = record["evaluation"] if record else None
    return evaluation["distances"]["aro"][level] if evaluation else None


def mmd_ratio_of(record, base, level: str):
    """MMD² of ``record`` over that of ``base`` at ``level`` (None when either is missing or 0)."""
    a, b = distance_of(record, "mmd2", level), distance_of(base, "mmd2", level)
    return a / b if a is not None and b else None


def metric_of(record, key: str):
    return record["metrics"][key] if record and record["metrics"] else None


def present(*values) -> bool:
    return all(v is not None and v == v for v in values)


class Runs:
    """The grid's records, looked up by study, model, attack, method and seed."""

    def __init__(self, records: list, lamb: float):
        self.records, self.lamb = records, lamb

    def study(self, name: str) -> list:
        return [r for r in self.records if name in r["studies"]]

    def seeds(self, studies=None) -> list:
        """The seeds of the paper's main grid (the λ sweep and the second model), in grid order; or, for
        a claim's own ``studies``, the seeds every one of them that has runs holds (C6 compares the kernel
        study's three seeds with the λ sweep's five: its cases exist on the three alone)."""
        if studies is None:
            return list(dict.fromkeys(r["config"].seed for r in self.main()))
        held = [[r["config"].seed for r in self.records if study in r["studies"]] for study in studies]
        held = [seeds for seeds in held if seeds]
        if not held:
            return []
        return [seed for seed in dict.fromkeys(held[0]) if all(seed in seeds for seeds in held[1:])]

    def for_seed(self, seed: int) -> "Runs":
        """The records of one seed: every claim is judged on each seed alone, as well as pooled."""
        return Runs([r for r in self.records if r["config"].seed == seed], self.lamb)

    def main(self) -> list:
        """The λ-sweep and second-model runs (the paper's main grid)."""
        return [r for r in self.records if {"lambda", "model"} & set(r["studies"])]

    def models(self) -> list:
        return list(dict.fromkeys(r["config"].model_name for r in self.main()))

    def attacks(self, model: str) -> list:
        return list(dict.fromkeys(r["config"].attack_name for r in self.main() if r["config"].model_name == model))

    def pick(self, model: str, attack: str, method: str, lamb: float = None, seed: int = None):
        """The main grid's run of ``model``, ``attack``, ``method`` and λ (the claims' λ by default), on
        ``seed`` (by default the first found)."""
        lamb = self.lamb if lamb is None and method != "RBT" else lamb
        for r in self.main():
            c = r["config"]
            if (c.model_name, c.attack_name, c.method) == (model, attack, method) and (
                    method == "RBT" or abs(c.mlmmdr_lamb - lamb) < 1e-12) and seed in (None, c.seed):
                return r
        return None

    def cells(self):
        """(model, attack, RBT record, SL-MMDR record, ML-MMDR record) at the claims' λ, evaluated, for
        every seed."""
        for seed in self.seeds():
            for model in self.models():
                for attack in self.attacks(model):
                    rbt, sl, ml = (self.pick(model, attack, m, seed=seed) for m in ("RBT", "SL-MMDR", "ML-MMDR"))
                    if rbt and rbt["evaluation"]:
                        yield (model, attack, rbt, sl if sl and sl["evaluation"] else None,
                               ml if ml and ml["evaluation"] else None)

    def lambdas(self, model: str) -> list:
        return sorted({r["config"].mlmmdr_lamb for r in self.main()
                       if r["config"].model_name == model and r["config"].mlmmdr_lamb > 0})

    def kernel_rows(self) -> list:
        """[(the RBT run, an evaluated kernel-study ML-MMDR run of the same seed)], seed by seed; the
        RBT run is None until it is trained and evaluated (a partial grid may finish a seed's kernel
        runs before its RBT run)."""
        rows = []
        for r in self.study("kernel"):
            c = r["config"]
            if r["evaluation"]:
                rbt = self.pick(c.model_name, c.attack_name, "RBT", seed=c.seed)
                rows.append((rbt if rbt and rbt["evaluation"] and rbt["metrics"] else None, r))
        return rows

    def erased_pairs(self) -> list:
        """[(model, metrics.erasing.Pair)] for every (model, attack, seed, defense) erased on both
        the RBT and the ML-MMDR (λ) run, whichever study the runs belong to."""
        runs = {}
        for r in self.records:
            c = r["config"]
            if not any(r.get(d) for d in ERASERS) or not (
                    c.method == "RBT" or (c.method == "ML-MMDR" and abs(c.mlmmdr_lamb - self.lamb) < 1e-12)):
                continue
            runs.setdefault((c.model_name, c.attack_name, c.seed), {})[c.method] = r
        pairs = []
        for (model, attack, seed), methods in runs.items():
            rbt, ml = methods.get("RBT"), methods.get("ML-MMDR")
            for defense in ERASERS:
                if rbt and ml and rbt.get(defense) and ml.get(defense):
                    pairs.append((model, Pair(attack, defense, seed, rbt[defense], ml[defense])))
        return pairs
