"""The measurement protocol: distances with baselines (paper §4, TABLE 2, App. B) and
detection pools (paper §6.1). Sampling draws from generators derived from the run's seed."""
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

import defenses
from defenses import DetectorInputs
from evaluation.detection_inputs import DetectionContext
from evaluation.representations import FeatureBank, PredictedGroups, predicted_groups
from inference import Subject, ba_asr, source_classes
from metrics import METRICS, aro, distance
from metrics.separability import separability
from models import LEVELS
from utils.errors import unknown_name
from utils.params import check_params, param
from utils.seed import generator, sample


# The version of what evaluation.json records; raising it makes every earlier evaluation stale (its
# inputs_hash differs). 2: every detection records its threshold-free score beside its rules' F1
# (a pool's sample-level AUROC, a class verdict's target rank) and STRIP both threshold rules. 3: IBD-PSC's
# threshold-free score is PSC's log-odds from its logits, where PSC itself rounds to 1.0 (its AUROC was ties).
# 4 and 5: the grid's stages pin the BLAS and OpenMP pools to --threads too (utils.threads), whose count BLAS
# results can depend on, those loaded during a stage included.
RECORD_VERSION = 5


@dataclass
class EvalOptions:
    """The protocol's knobs; each is an ``evaluate.py`` flag of the same name."""

    num_samples: int = param(500, "representations per set for the distances (paper §4: 500; fewer are used "
                             "when fewer exist, and the counts are recorded)", low=1)
    swd_projections: int = param(100, "random projections for SWD₁ (seeded by --seed)", low=1)
    pool_sizes: tuple = param((100, 500), "detection pool sizes N of inputs classified as the target "
                              "(paper §6.1: 100 500)", low=1, nargs="+")
    pool_ratios: tuple = param((0.5, 1.0), "malicious:benign ratios r′ of the pools (1.0 from the paper §6.1; "
                               "0.5 ours)", low=0.0, low_open=True, nargs="+")
    ac_reduce: str = param("pca", "AC's dimension reduction before k-means (k = 2). pca (default): keeps each "
                           "direction's variance, as IBM ART's AC; ica: FastICA, the paper's §6.1 ('ICA ... "
                           "vectors of length 20'), which whitens every component to unit variance and so hides "
                           "the split from k-means (docs/methods/detection-ac-ss-sr.md, 'Why AC does not use the paper's ICA-20'). Both forms are always also stored in "
                           "evaluation.json", choices=defenses.AC_REDUCTIONS)
    ac_components: int = param(10, "AC: dimensions kept (default 10, as Chen et al. and IBM ART; the paper: 20)",
                               low=1)
    ac_decision: str = param("clean_reference", "AC's own rule for which cluster is malicious. clean_reference "
                             "(default): the cluster farther from the defender's ~200 clean validation samples "
                             "(paper §3.1), the same reference SR uses; smaller: the smaller cluster; "
                             "relative_size: the smaller only if it holds ≤ 35%% (Chen et al.). All are stored in "
                             "evaluation.json", choices=defenses.AC_DECISIONS)
    ss_score: str = param("centred", "SS outlier score: centred ((x−μ)·v)², the paper §3.3 and Tran et al.'s "
                          "algorithm (default); uncentred |x·v|, their released code. Both are stored",
                          choices=defenses.SS_SCORES)
    ss_removal_factor: float = param(1.5, "SS's own rule removes the top factor·ε·N scores (Tran et al.: 1.5)",
                                     low=0.0, low_open=True)
    sr_reference: int = param(200, "SR: clean reference representations from the training set's target class "
                              "(paper §3.1, §6.1: 200)", low=1)
    sr_energy: float = param(0.9, "SR: energy kept by the subspace (paper §6.1: 0.9)", low=0.0, high=1.0,
                             low_open=True)
    sr_percentile: float = param(95.0, "SR's label-free rule, reported beside the paper's (max F1 over "
                                 "thresholds, the headline): threshold at this percentile of the reference "
                                 "errors (95)", low=0.0, high=100.0, low_open=True)

    detectors: tuple = param((), "the registered detectors to run, by name (default: every one: "
                             "evaluate.py --help lists them)", nargs="*", type=str)
    class_samples: tuple = param((0, 5000, 2000), "class-level detectors (SCAn, the Beatrix class test): the "
                                 "sizes of the inspected part of the poisoned training set as labelled, each run "
                                 "and recorded on its own (detection.class_level's by_size): 0 = the whole set, as a "
                                 "defender holds it (the toolbox inspects it whole); a count = a seeded uniform "
                                 "sample that keeps every class's true share (class-proportional), each 0 or at "
                                 "least 20. The verdict read first is the largest size's; each size also runs a "
                                 "size-only control (its poisoned rows replaced by clean target-class images)",
                                 low=0, nargs="+")
    clean_reserve: int = param(2000, "class-level detectors: clean test images of every class the defender "
                               "holds as a reserve (the backdoor toolbox's 2,000)", low=20)
    training_class_levels: tuple = param(LEVELS, "levels at which SPECTRE also runs in its reference's regime: on "
                                         "the target class of the whole poisoned training set, ε its true poisoned "
                                         "count (recorded apart, as detection.training_class; none: not run). Up to "
                                         "a few minutes a level when half the class is poisoned", nargs="*",
                                         choices=LEVELS)
    detector_options: dict = field(default_factory=dict)  # {detector: {field: value}} from its --<name>_* flags

    def __post_init__(self):
        self.pool_sizes, self.pool_ratios = tuple(self.pool_sizes), tuple(self.pool_ratios)
        self.detectors = tuple(self.detectors or ())
        # an evaluation recorded before the sizes were a list holds one count
        samples = self.class_samples
        self.class_samples = tuple(samples) if isinstance(samples, (list, tuple)) else (samples,)
        self.training_class_levels = tuple(self.training_class_levels or ())
        check_params(self)
        if not self.class_samples or any(0 < size < 20 for size in self.class_samples):
            from utils.errors import ParameterError

            raise ParameterError("class_samples", f"must be one or more sizes, each 0 (the whole training set) or at "
                                 f"least 20, got {list(self.class_samples)}")

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    def identity(self) -> dict:
        """What a run's ``inputs_hash`` compares: the options and, from version 2 on, the version of
        what an evaluation records (RECORD_VERSION), so that an evaluation.json written before a
        record changed is stale and the evaluate stage computes it again (reports still read it)."""
        return {**asdict(self), "record_version": RECORD_VERSION}


def distances(subject: Subject, groups: PredictedGroups, options: EvalOptions, features: FeatureBank = None) -> dict:
    """M(Z^T_t, Z^V_t), the intra-class baseline M(half A, half B) of the benign target set and
    the inter-class baseline min_{j≠t} M(Z^T_t, Z^T_j), for M in MMD², ED², SWD₁ at s1 s2 s3.

    Up to 2·num_samples benign target representations are split into halves A and B so that every
    comparison is between sets of at most num_samples (equal sizes where the data allow).
    ``features`` is the test set's bank (shared with :func:`detections`)."""
    seed, target = subject.seed, groups.target
    features = features or FeatureBank(subject, subject.data.test_x)
    gen = generator(seed, "evaluate-distances")
    benign = sample(groups.benign(target), 2 * options.num_samples, gen)
    half = (len(benign) + 1) // 2
    half_a, half_b = benign[:half], benign[half:]
    malicious = sample(groups.malicious, options.num_samples, gen)
    others = {label: sample(groups.benign(label), options.num_samples, gen)
              for label in range(subject.data.num_classes) if label != target}
    counts = {"benign_target_available": len(groups.benign(target)), "malicious_available": len(groups.malicious),
              "benign_half_a": len(half_a), "benign_half_b": len(half_b), "malicious": len(malicious),
              "other_classes": {str(label): len(index) for label, index in others.items()}}
    feats_a, feats_b = features(half_a), features(half_b)
    feats_v = features(malicious, triggered=True)
    feats_other = {label: features(index) for label, index in others.items() if len(index) >= 2}
    notes = []
    if len(half_a) < 2:
        notes.append(f"fewer than 4 clean test images are classified as the target ({len(benign)}): "
                     "no distance can be computed")
    if len(malicious) < 2:
        notes.append(f"fewer than 2 triggered test images are classified as the target ({len(malicious)}): "
                     "the attack row is empty")
    levels = {}
    for level in LEVELS:
        levels[level] = {}
        for metric in METRICS:
            measure = lambda a, b: (distance(metric, a, b, options.swd_projections, seed)
                                    if len(a) >= 2 and len(b) >= 2 else None)
            row = {"attack": measure(feats_a[level], feats_v[level]),
                   "intra": measure(feats_a[level], feats_b[level]), "inter": None, "inter_class": None}
            for label, feats in feats_other.items():
                value = measure(feats_a[level], feats[level])
                if value is not None and (row["inter"] is None or value < row["inter"]):
                    row["inter"], row["inter_class"] = value, label
            levels[level][metric] = row
    # detector-free: how well a linear boundary and the clusters' shape tell the two groups apart
    benign_all = {level: torch.cat([feats_a[level], feats_b[level]]).numpy() for level in LEVELS}
    separable = {level: separability(benign_all[level], feats_v[level].numpy(), seed) for level in LEVELS}
    return {"counts": counts, "levels": levels, "separability": separable,
            "aro": {level: aro(levels[level]) for level in LEVELS}, "notes": notes}


def pool_counts(size: int, ratio: float, benign_available: int, malicious_available: int) -> tuple:
    """(benign, malicious) for a pool of ``size`` at malicious:benign = ``ratio``; shrunk, keeping
    the ratio, when the test set has fewer such inputs than asked for."""
    malicious = int(round(size * ratio / (1 + ratio)))
    benign = size - malicious
    scale = min(1.0, benign_available / max(benign, 1), malicious_available / max(malicious, 1))
    if scale < 1.0:
        benign, malicious = int(benign * scale), int(malicious * scale)
    return benign, malicious


def sr_reference_index(subject: Subject, options: EvalOptions) -> torch.Tensor:
    """Indices into the *training* set of SR's clean reference: target-class originals (never
    poisoned copies), a seeded sample of ``sr_reference``; never drawn from the evaluated pool."""
    train_target = (subject.data.train_y == subject.target).nonzero().flatten()
    return sample(train_target, options.sr_reference, generator(subject.seed, "sr-reference"))


def selected_detectors(options: EvalOptions) -> list:
    """The registered detectors this evaluation runs: ``options.detectors``, or every one."""
    names = list(options.detectors) if options.detectors else list(defenses.DETECTORS)
    unknown = [name for name in names if name not in defenses.DETECTORS]
    if unknown:
        raise unknown_name("detector", unknown[0], defenses.DETECTORS)
    return [defenses.DETECTORS[name] for name in names]


def detector_options(detector, options: EvalOptions):
    """The detector's options dataclass, from ``options.detector_options`` (its flags) or its defaults."""
    if detector.options is None:
        return None
    return detector.options(**options.detector_options.get(detector.name, {}))


def score(detector, detection, malicious) -> dict:
    """One detector's F1 on one pool: its own decision, the oracle (the best labeling or threshold
    chosen with the ground truth), the headline (the detector's declared rule) and every variant;
    beside them the threshold-free ``auroc`` of its per-sample scores (higher = more suspicious,
    each detector orients its own: STRIP's is −entropy), and ``variants_auroc`` per variant. The
    AUROC is None for a detection without per-sample scores (AC: a clustering gives labels only)
    and for a pool holding one kind of input only."""
    own, oracle = detection.own_f1(malicious), detection.oracle_f1(malicious)
    flagged, malicious = np.asarray(detection.flagged, dtype=bool), np.asarray(malicious, dtype=bool)
    return {"headline": own if detector.headline == "own" else oracle, "headline_rule": detector.headline,
            "own": own, "oracle": oracle, "auroc": detection.auroc(malicious),
            # its own decision's false rejection rate (benign inputs flagged) and false acceptance rate
            "frr": float(flagged[~malicious].mean()) if (~malicious).any() else None,
            "far": float((~flagged[malicious]).mean()) if malicious.any() else None,
            "variants": {name: {**result.decision_f1(malicious), "oracle": result.oracle_f1(malicious)}
                         for name, result in detection.variants.items()},
            # kept apart from "variants", whose keys are all F1 rules (the reports average each)
            "variants_auroc": {name: result.auroc(malicious) for name, result in detection.variants.items()},
            **detection.info}


def detections(subject: Subject, groups: PredictedGroups, options: EvalOptions, features: FeatureBank = None) -> dict:
    """Every selected detector's F1 for every pool (N, r′): at s1 s2 s3 for those that read
    representations, once per pool for input-level ones; and the class-level verdicts of those
    that inspect every class. The headline is each detector's declared rule (AC, SS, SR: their own
    decision as the paper uses it, SR's the max F1 over thresholds, §6.1); the oracle F1 and the
    variants are kept beside it. The clean reference of SR and of AC's decision is a seeded sample
    of 200 clean training images of the target class (the defender's validation data, paper §3.1),
    never drawn from the evaluated pool. Pools are drawn from the test set's bank ``features``:
    each image's representations are extracted once for every detector."""
    features = features or FeatureBank(subject, subject.data.test_x)
    chosen = selected_detectors(options)
    gen = generator(subject.seed, "evaluate-detection")
    reference_index = sr_reference_index(subject, options)
    train_bank = FeatureBank(subject, subject.data.train_x)
    reference = train_bank(reference_index)
    context = DetectionContext(subject, options, train_bank, features)
    benign_all, malicious_all = groups.benign(subject.target), groups.malicious
    pools, seconds = [], {}  # each detector's own time (with the inputs only it needs), summed over pools and levels
    drawn = []  # (pool, benign index, malicious index, truth) of each pool with inputs
    for size in options.pool_sizes:
        for ratio in options.pool_ratios:
            n_benign, n_malicious = pool_counts(size, ratio, len(benign_all), len(malicious_all))
            pool = {"N": size, "ratio": ratio, "benign": n_benign, "malicious": n_malicious,
                    "reference": len(reference_index), "levels": {}, "input_level": {}}
            if n_benign < 1 or n_malicious < 1 or n_benign + n_malicious < 4:
                pool["note"] = (f"not enough inputs classified as the target (benign {len(benign_all)}, "
                                f"malicious {len(malicious_all)}) for a pool")
                pools.append(pool)
                continue
            benign_index, malicious_index = sample(benign_all, n_benign, gen), sample(malicious_all, n_malicious, gen)
            benign_feats, malicious_feats = features(benign_index), features(malicious_index, triggered=True)
            is_malicious = torch.cat([torch.zeros(n_benign, dtype=torch.bool),
                                      torch.ones(n_malicious, dtype=torch.bool)]).numpy()
            for level in LEVELS:
                feats = torch.cat([benign_feats[level], malicious_feats[level]]).numpy()
                pool["levels"][level] = {}
                for detector in chosen:
                    if detector.consumes not in ("pool", "maps"):
                        continue
                    own_options = detector_options(detector, options)
                    inputs = DetectorInputs(level=level, seed=subject.seed, protocol=options, features=feats,
                                            reference=reference[level].numpy(), expected_malicious=n_malicious)
                    if detector.consumes == "maps":
                        context.add_maps(inputs, own_options, feats)
                    started = time.perf_counter()
                    result = detector.run(inputs, own_options, subject.seed)
                    seconds[detector.name] = seconds.get(detector.name, 0.0) + time.perf_counter() - started
                    pool["levels"][level][detector.name] = score(detector, result, is_malicious)
            drawn.append((pool, benign_index, malicious_index, is_malicious))
            pools.append(pool)
    for detector in chosen:  # input-level: one run over every pool's inputs, each pool scored on its own
        if detector.consumes == "inputs" and drawn:
            own_options = detector_options(detector, options)
            started = time.perf_counter()
            benign_union = torch.unique(torch.cat([benign for _, benign, _, _ in drawn]))
            malicious_union = torch.unique(torch.cat([malicious for _, _, malicious, _ in drawn]))
            inputs = context.input_level(benign_union, malicious_union, own_options)
            result = detector.run(inputs, own_options, subject.seed)
            seconds[detector.name] = seconds.get(detector.name, 0.0) + time.perf_counter() - started
            row_of = {("b", int(i)): k for k, i in enumerate(benign_union)}
            row_of.update({("m", int(i)): len(benign_union) + k for k, i in enumerate(malicious_union)})
            for pool, benign, malicious, is_malicious in drawn:
                rows = np.array([row_of[("b", int(i))] for i in benign] + [row_of[("m", int(i))] for i in malicious])
                pool["input_level"][detector.name] = score(detector, result.subset(rows), is_malicious)
    class_level, class_detectors = {}, [detector for detector in chosen if detector.consumes == "classes"]
    for detector in class_detectors:
        for level in LEVELS:
            started = time.perf_counter()
            class_level.setdefault(level, {})[detector.name] = class_level_record(
                detector, detector_options(detector, options), context, level, subject.seed, subject.target)
            seconds[detector.name] = seconds.get(detector.name, 0.0) + time.perf_counter() - started
    training_class = training_class_record(chosen, context, options, subject.seed, seconds)
    training_set = {}
    for detector in chosen:  # training-set detectors: once, over every row of the poisoned training set
        if detector.consumes == "training":
            started = time.perf_counter()
            own_options = detector_options(detector, options)
            inputs, poisoned = context.training_set(own_options)
            result = detector.run(inputs, own_options, subject.seed)
            training_set[detector.name] = {**score(detector, result, poisoned), "decisions_f1": result.decision_f1(poisoned),
                                           "N": int(len(poisoned)), "poisoned": int(poisoned.sum()),
                                           "base_set": context.base_set_record()}
            seconds[detector.name] = seconds.get(detector.name, 0.0) + time.perf_counter() - started
    return {"headline_rules": {d.name: d.headline for d in chosen}, "detectors": [d.name for d in chosen],
            "pools": pools, "class_level": class_level,
            **({"class_protocol": context.class_protocol()} if class_detectors else {}),
            **({"training_class": training_class} if training_class else {}),
            **({"training_set": training_set} if training_set else {}),
            **({"clean_set": context.clean_set_record()} if context.clean_set_record() else {}),
            "seconds": {name: round(value, 3) for name, value in seconds.items()}}


# The pool detectors whose reference inspects one whole training class, with the poisoned count as an
# oracle budget: they also run there (training_class_record)
TRAINING_CLASS_DETECTORS = ("spectre",)


def class_level_record(detector, own_options, context: DetectionContext, level: str, seed: int, target: int) -> dict:
    """One class-level detector at one level, as stored: its verdict (class_verdict) on every
    inspected size (context.class_sizes(), largest first), each with what it inspected
    (``inspected``), the verdict on its size-only control (``size_control``: the same class
    counts, the poisoned rows replaced by clean target-class images, i.e. what the class sizes
    alone give), the target's statistic in both and their ratio (``target_over_control``), and
    ``flagged_beyond_size`` (the target flagged on the sample but not on its control). Where the detector records the classes several
    variants flag (SCAn: each identity estimate × threshold, ``flagged_by_variant``),
    ``variants_against_control`` gives, per variant, whether the target is flagged on the sample
    and on the control. The record is the largest size's (the whole training set by default, the
    defender's protocol), with ``by_size`` holding every size's."""
    by_size = {}
    for name, _ in context.class_sizes():
        inputs, truth = context.class_level(level, detector, name)
        record = class_verdict(detector.run(inputs, own_options, seed), truth, target)
        control_inputs, facts = context.class_control(level, name)
        control = detector.run(control_inputs, own_options, seed)
        control_record = {**control.to_dict(), "target_flagged": target in control.flagged_classes,
                          "others_flagged": [c for c in control.flagged_classes if c != target],
                          "target_statistic": _of_target(control.to_dict()["statistic"], target), **facts}
        record.update(size=name, inspected=context.inspected_facts(name), size_control=control_record,
                      target_statistic=_of_target(record["statistic"], target),
                      target_over_control=_ratio(_of_target(record["statistic"], target),
                                                 control_record["target_statistic"]),
                      flagged_beyond_size=bool(record["target_flagged"] and not control_record["target_flagged"]))
        if "flagged_by_variant" in record and "flagged_by_variant" in control_record:
            record["variants_against_control"] = {
                variant: {"target_flagged": target in classes,
                          "control_target_flagged": target in control_record["flagged_by_variant"][variant]}
                for variant, classes in record["flagged_by_variant"].items()}
        by_size[name] = record
    return {**next(iter(by_size.values())), "by_size": by_size}


def _of_target(statistic: dict, target: int):
    value = statistic.get(str(target))
    return None if value is None else float(value)


def _ratio(value, control):
    """value / control where both are finite and the control positive, else None."""
    if value is None or control is None or not (np.isfinite(value) and np.isfinite(control)) or control <= 0:
        return None
    return float(value / control)


def training_class_record(chosen: list, context: DetectionContext, options: EvalOptions, seed: int,
                          seconds: dict) -> dict:
    """The pool detectors of TRAINING_CLASS_DETECTORS in their reference's regime: on the target
    class of the whole poisoned training set as labelled, ε its true poisoned count (an oracle, as
    in the pools), at ``options.training_class_levels``; each scored as a pool is (score). {} when
    none of them runs."""
    from utils.errors import ParameterError

    runs = [detector for detector in chosen if detector.name in TRAINING_CLASS_DETECTORS]
    if not runs or not options.training_class_levels:
        return {}
    record, notes = {"set": "the target class of the whole poisoned training set as labelled (WaNet's noise-mode "
                            "rows left out)", "levels": {}}, []
    for level in options.training_class_levels:
        features, poisoned = context.training_class(level)
        record.update(N=int(len(poisoned)), poisoned=int(poisoned.sum()),
                      poisoned_share=float(poisoned.mean()) if len(poisoned) else 0.0)
        if not poisoned.any():
            notes.append("the target class holds no poisoned row: nothing to detect")
            break
        for detector in runs:
            started = time.perf_counter()
            inputs = DetectorInputs(level=level, seed=seed, protocol=options, features=features,
                                    expected_malicious=int(poisoned.sum()))
            try:
                result = detector.run(inputs, detector_options(detector, options), seed)
            except ParameterError as error:
                notes.append(f"{detector.name} at {level}: {error}")
                continue
            finally:
                seconds[detector.name] = seconds.get(detector.name, 0.0) + time.perf_counter() - started
            record["levels"].setdefault(level, {})[detector.name] = score(detector, result, poisoned)
    if notes:
        record["notes"] = notes
    return record


def class_verdict(verdict, truth, target: int) -> dict:
    """A class-level verdict as stored: each class's statistic, whether the target (and only it) is
    flagged, and the per-sample F1 inside the target class (the samples it flags there against
    the poisoned ones); beside them the threshold-free ``target_rank`` of the target's statistic
    among the ``n_classes`` classes (1 = most anomalous; ``target_rank_ties`` others share its value)."""
    from metrics import f1_score, target_rank

    record = verdict.to_dict()
    in_target = truth["labels"] == target
    flagged = verdict.flagged if verdict.flagged is not None else None
    record.update(target_flagged=target in verdict.flagged_classes,
                  others_flagged=[c for c in verdict.flagged_classes if c != target],
                  f1_in_target=(f1_score(flagged[in_target], truth["poisoned"][in_target])
                                if flagged is not None and target in verdict.flagged_classes else 0.0),
                  **target_rank(verdict.statistic, target))
    return record


def evaluate(subject: Subject, options: EvalOptions = None) -> dict:
    """BA, ASR, distances (§4) and detections (§6.1) of a trained model. The test set is predicted
    once and every test image's representations are extracted at most once (clean and triggered)."""
    options = options or EvalOptions()
    groups = predicted_groups(subject)
    features = FeatureBank(subject, subject.data.test_x)
    return {**ba_asr(groups.clean_pred, subject.data.test_y, groups.triggered_pred, subject.target,
                     source_classes(subject.attack)),
            "options": options.to_dict(),
            "distances": distances(subject, groups, options, features),
            "detection": detections(subject, groups, options, features)}
