"""Feature scatter plots of benign vs malicious representations at s1 s2 s3 (paper Fig. 4)."""
import matplotlib.pyplot as plt
import numpy as np
import torch

from evaluation.representations import extract, malicious_index, sample
from models import LEVELS
from training.run import Prepared
from utils.errors import UserError
from utils.seed import derive_seed, generator
from visualization.common import method_label

PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE"}


def scatter_sets(prepared: Prepared, num_samples: int) -> tuple:
    """(benign, malicious, notes): up to ``num_samples`` benign target-class test images and
    triggered non-target test images classified as the target (the authors' plotting sets)."""
    config, data = prepared.config, prepared.data
    gen = generator(config.seed, "visualize")
    benign = sample((data.test_y == config.target).nonzero().flatten(), num_samples, gen)
    malicious = sample(malicious_index(prepared)[2], num_samples, gen)
    if len(benign) < 2 or len(malicious) < 2:
        raise UserError(f"cannot plot {config.run_name}: {len(benign)} benign target-class test images and "
                        f"{len(malicious)} triggered images classified as the target (need at least 2 each; "
                        f"a run with ASR near 0 has no malicious group)")
    notes = [f"only {len(group)} {name} samples exist (asked for {num_samples}); plotting all of them"
             for name, group in (("benign", benign), ("malicious", malicious)) if len(group) < num_samples]
    return benign, malicious, notes


def project(features: np.ndarray, method: str, seed: int) -> np.ndarray:
    """2-D projection of the pooled features: PCA (the authors' code) or seeded t-SNE."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(features)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
        return TSNE(n_components=2, random_state=seed, init="pca", perplexity=perplexity).fit_transform(features)
    raise UserError(f"unknown projection '{method}'; choose one of {', '.join(PROJECTIONS)}")


def feature_scatter(prepared: Prepared, num_samples: int = 100, method: str = "pca"):
    """The 1×3 figure (s1, s2, s3) for one run; returns (figure, notes)."""
    config = prepared.config
    benign, malicious, notes = scatter_sets(prepared, num_samples)
    feats_benign = extract(prepared.model, prepared.data.test_x[benign], prepared.device, LEVELS,
                           config.eval_batch_size)
    feats_malicious = extract(prepared.model, prepared.data.test_x[malicious], prepared.device, LEVELS,
                              config.eval_batch_size, transform=prepared.attack)
    figure, axes = plt.subplots(1, len(LEVELS), figsize=(12, 4), dpi=100)
    label = method_label(config.method, config.mlmmdr_lamb)
    for axis, level in zip(axes, LEVELS):
        pooled = torch.cat([feats_benign[level], feats_malicious[level]]).numpy()
        points = project(pooled, method, derive_seed(config.seed, f"project-{level}") % (2**31))
        axis.scatter(*points[:len(benign)].T, s=10, alpha=0.7, color="#4c72b0", label="benign")
        axis.scatter(*points[len(benign):].T, s=10, alpha=0.7, color="#c44e52", label="malicious")
        axis.set_title(f"{level}, {label}")
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0].legend(loc="best", fontsize=9)
    figure.suptitle(f"{config.data_name} / {config.model_name} / {config.attack_name} ({PROJECTIONS[method]})", fontsize=10)
    figure.tight_layout()
    return figure, notes
