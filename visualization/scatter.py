"""Feature scatter plots of benign vs malicious representations at s1 s2 s3 (paper Fig. 4)."""
import matplotlib.pyplot as plt
import numpy as np
import torch

from inference import Subject, attacked_mask
from models import LEVELS
from utils.errors import ParameterError, UserError
from utils.seed import derive_seed, generator, sample

PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE"}


class NothingToPlot(UserError):
    """The run has too few benign or malicious images to draw (a model with ASR near 0)."""


def scatter_sets(subject: Subject, num_samples: int) -> tuple:
    """(benign, malicious, notes): up to ``num_samples`` benign target-class test images and
    triggered non-target test images classified as the target (the authors' plotting sets)."""
    data, target = subject.data, subject.target
    gen = generator(subject.seed, "visualize")
    benign = sample((data.test_y == target).nonzero().flatten(), num_samples, gen)
    attacked = attacked_mask(data.test_y, subject.attack, target).nonzero().flatten()
    malicious = sample(attacked[subject.predict(data.test_x[attacked], triggered=True) == target], num_samples, gen)
    if len(benign) < 2 or len(malicious) < 2:
        raise NothingToPlot(f"cannot plot: {len(benign)} benign target-class test images and "
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
    raise ParameterError("method", f"must be one of {', '.join(PROJECTIONS)}, got '{method}'")


def feature_scatter(subject: Subject, num_samples: int = 100, method: str = "pca", label: str = "",
                    title: str = ""):
    """The 1×3 figure (s1, s2, s3) of one trained model (Fig. 4); returns (figure, notes).
    ``label`` names the training method in each panel, ``title`` the data/model/attack."""
    benign, malicious, notes = scatter_sets(subject, num_samples)
    feats_benign = subject.extract(subject.data.test_x[benign])
    feats_malicious = subject.extract(subject.data.test_x[malicious], triggered=True)
    figure, axes = plt.subplots(1, len(LEVELS), figsize=(12, 4), dpi=100)
    for axis, level in zip(axes, LEVELS):
        pooled = torch.cat([feats_benign[level], feats_malicious[level]]).numpy()
        points = project(pooled, method, derive_seed(subject.seed, f"project-{level}") % (2**31))
        axis.scatter(*points[:len(benign)].T, s=10, alpha=0.7, color="#4c72b0", label="benign")
        axis.scatter(*points[len(benign):].T, s=10, alpha=0.7, color="#c44e52", label="malicious")
        axis.set_title(f"{level}, {label}")
        axis.set_xticks([])
        axis.set_yticks([])
    axes[0].legend(loc="best", fontsize=9)
    figure.suptitle(f"{title} ({PROJECTIONS[method]})", fontsize=10)
    figure.tight_layout()
    return figure, notes
