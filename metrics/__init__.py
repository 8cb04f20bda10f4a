"""Distances between representation sets (paper §2.3, App. B), ranking/F1 helpers, and C7's paired
verdict on erasing results (metrics/erasing.py)."""
from metrics.distances import DISTANCES, METRICS, aro, ascending_rank, distance, energy_distance2, mmd2, sliced_wasserstein1
from metrics.f1 import best_f1_over_thresholds, f1_score

__all__ = ["DISTANCES", "mmd2", "energy_distance2", "sliced_wasserstein1", "distance", "aro", "ascending_rank",
           "METRICS", "f1_score", "best_f1_over_thresholds"]
