"""Algorithm 1 (mini-batch ML-MMDR): the loss L1 + L2 (+ λ·L3) and the training loop."""
from training.loss import CE_REDUCTIONS, backdoor_cross_entropy
from training.trainer import AMP_DTYPES, Trainer, TrainSettings

__all__ = ["AMP_DTYPES", "CE_REDUCTIONS", "backdoor_cross_entropy", "Trainer", "TrainSettings"]
