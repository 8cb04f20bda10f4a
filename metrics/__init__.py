"""Distances between representation sets (paper §2.3, App. B), ranking/F1 helpers, threshold-free
scores (metrics/auroc.py: AUROC, a target's rank) and C7's paired verdict on erasing results
(metrics/erasing.py)."""
from metrics.distances import DISTANCES, METRICS, aro, ascending_rank, distance, energy_distance2, mmd2, sliced_wasserstein1
from metrics.auroc import auroc, target_rank
from metrics.f1 import best_f1_over_thresholds, f1_score

__all__ = ["DISTANCES", "mmd2", "energy_distance2", "sliced_wasserstein1", "distance", "aro", "ascending_rank",
           "METRICS", "f1_score", "best_f1_over_thresholds", "auroc", "target_rank"]
