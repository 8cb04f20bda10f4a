"""The measurement protocol: distances with baselines (paper §4, TABLE 2, App. B) and
detection pools (paper §6.1). Sampling draws from generators derived from the run's seed."""
from dataclasses import asdict, dataclass

import torch

import defenses
from evaluation.representations import PredictedGroups, extract, sample
from metrics import METRICS, aro, distance
from models import LEVELS
from training.run import Prepared
from utils.seed import generator


@dataclass
class EvalOptions:
    """The protocol's knobs; each is an ``evaluate.py`` flag of the same name."""

    num_samples: int = 500          # per set (paper §4)
    swd_projections: int = 100      # random directions for SWD₁
    pool_sizes: tuple = (100, 500)  # N, inputs classified as the target (paper §6.1)
    pool_ratios: tuple = (0.5, 1.0)  # r′ = malicious : benign
    ac_components: int = 20         # FastICA dimensions (paper §6.1)
    ac_decision: str = "smaller"    # or "relative_size"
    ss_removal_factor: float = 1.5  # flag the top 1.5·ε·N (Tran et al.)
    sr_reference: int = 200         # clean validation representations (paper §6.1)
    sr_energy: float = 0.9          # subspace keeps 90% of the energy (paper §6.1)
    sr_percentile: float = 95.0     # own rule: threshold at this percentile of reference errors

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def _features(prepared: Prepared, index: torch.Tensor, triggered: bool, images=None) -> dict:
    images = prepared.data.test_x if images is None else images
    return extract(prepared.model, images[index], prepared.device, LEVELS, prepared.config.eval_batch_size,
                   transform=prepared.attack if triggered else None)


def distances(prepared: Prepared, groups: PredictedGroups, options: EvalOptions) -> dict:
    """M(Z^T_t, Z^V_t), the intra-class baseline M(half A, half B) of the benign target set and
    the inter-class baseline min_{j≠t} M(Z^T_t, Z^T_j), for M in MMD², ED², SWD₁ at s1 s2 s3.

    Up to 2·num_samples benign target representations are split into halves A and B so that every
    comparison is between sets of at most num_samples (equal sizes where the data allow)."""
    seed, target = prepared.config.seed, groups.target
    gen = generator(seed, "evaluate-distances")
    benign = sample(groups.benign(target), 2 * options.num_samples, gen)
    half = (len(benign) + 1) // 2
    half_a, half_b = benign[:half], benign[half:]
    malicious = sample(groups.malicious, options.num_samples, gen)
    others = {label: sample(groups.benign(label), options.num_samples, gen)
              for label in range(prepared.data.num_classes) if label != target}
    counts = {"benign_target_available": len(groups.benign(target)), "malicious_available": len(groups.malicious),
              "benign_half_a": len(half_a), "benign_half_b": len(half_b), "malicious": len(malicious),
              "other_classes": {str(label): len(index) for label, index in others.items()}}
    feats_a, feats_b = _features(prepared, half_a, False), _features(prepared, half_b, False)
    feats_v = _features(prepared, malicious, True)
    feats_other = {label: _features(prepared, index, False) for label, index in others.items() if len(index) >= 2}
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
    return {"counts": counts, "levels": levels,
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


def sr_reference_index(prepared: Prepared, options: EvalOptions) -> torch.Tensor:
    """Indices into the *training* set of SR's clean reference: target-class originals (never
    poisoned copies), a seeded sample of ``sr_reference``; never drawn from the evaluated pool."""
    config, data = prepared.config, prepared.data
    train_target = (data.train_y == config.target).nonzero().flatten()
    return sample(train_target, options.sr_reference, generator(config.seed, "sr-reference"))


def detections(prepared: Prepared, groups: PredictedGroups, options: EvalOptions) -> dict:
    """AC, SS and SR F1 at s1 s2 s3 for every pool (N, r′), under the method's own rule ("own")
    and the best rule its output allows ("best"; the headline). SR's clean reference comes from
    the training set's clean target-class images, never from the evaluated pool."""
    config, data = prepared.config, prepared.data
    gen = generator(config.seed, "evaluate-detection")
    reference_index = sr_reference_index(prepared, options)
    reference = _features(prepared, reference_index, False, images=data.train_x)
    benign_all, malicious_all = groups.benign(config.target), groups.malicious
    pools = []
    for size in options.pool_sizes:
        for ratio in options.pool_ratios:
            n_benign, n_malicious = pool_counts(size, ratio, len(benign_all), len(malicious_all))
            pool = {"N": size, "ratio": ratio, "benign": n_benign, "malicious": n_malicious,
                    "reference": len(reference_index), "levels": {}}
            if n_benign < 1 or n_malicious < 1 or n_benign + n_malicious < 4:
                pool["note"] = (f"not enough inputs classified as the target (benign {len(benign_all)}, "
                                f"malicious {len(malicious_all)}) for a pool")
                pools.append(pool)
                continue
            benign_feats = _features(prepared, sample(benign_all, n_benign, gen), False)
            malicious_feats = _features(prepared, sample(malicious_all, n_malicious, gen), True)
            is_malicious = torch.cat([torch.zeros(n_benign, dtype=torch.bool),
                                      torch.ones(n_malicious, dtype=torch.bool)]).numpy()
            for level in LEVELS:
                feats = torch.cat([benign_feats[level], malicious_feats[level]]).numpy()
                results = {
                    "ac": defenses.activation_clustering(feats, options.ac_components, config.seed,
                                                         options.ac_decision),
                    "ss": defenses.spectral_signatures(feats, n_malicious / len(feats), options.ss_removal_factor),
                    "sr": defenses.subspace_reconstruction(feats, reference[level].numpy(), options.sr_energy,
                                                           options.sr_percentile),
                }
                pool["levels"][level] = {name: {"own": result.own_f1(is_malicious),
                                                "best": result.best_f1(is_malicious), **result.info}
                                         for name, result in results.items()}
            pools.append(pool)
    return {"headline_rule": "best", "pools": pools}
