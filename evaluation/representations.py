"""The paper's §4 groups of test inputs, and a bank that extracts each input's representations once.

Eval mode, no gradients, batched (the inference module); each level's output is flattened to (N, d)
float32 on the CPU. Every later analysis (distances, detections, figures) draws from it.
"""
from dataclasses import dataclass

import torch

from inference import Subject, attacked_mask, source_classes
from models import LEVELS


@dataclass
class PredictedGroups:
    """Indices into the test set of the paper's §4 groups, from the model's predictions.

    benign[j]: clean test images classified as j (Z^T_j); malicious: test images whose true
    class is not the target that, triggered, are classified as the target (Z^V_t); for a
    source-specific attack, of its source classes only.
    """

    clean_pred: torch.Tensor
    triggered_pred: torch.Tensor
    non_target_index: torch.Tensor
    target: int
    attacked: torch.Tensor = None   # bool over non_target_index: a source class's image (None: all)

    def benign(self, label: int) -> torch.Tensor:
        return (self.clean_pred == label).nonzero().flatten()

    @property
    def malicious(self) -> torch.Tensor:
        reached = self.triggered_pred == self.target
        return self.non_target_index[reached if self.attacked is None else reached & self.attacked]


def predicted_groups(subject: Subject) -> PredictedGroups:
    """Predict the clean test set and the triggered non-target test images once."""
    data = subject.data
    non_target = (data.test_y != subject.target).nonzero().flatten()
    clean_pred = subject.predict(data.test_x)
    triggered_pred = subject.predict(data.test_x[non_target], triggered=True)
    attacked = None if source_classes(subject.attack) is None else attacked_mask(data.test_y, subject.attack,
                                                                                subject.target)[non_target]
    return PredictedGroups(clean_pred, triggered_pred, non_target, subject.target, attacked)


class FeatureBank:
    """Representations at s1 s2 s3 of images of one set (the test or the training set), clean or
    triggered, each extracted at most once however many samples and pools draw it."""

    def __init__(self, subject: Subject, images: torch.Tensor, levels=LEVELS):
        self.subject, self.images, self.levels = subject, images, tuple(levels)
        self._row = {False: {}, True: {}}
        self._store = {False: {level: [] for level in self.levels}, True: {level: [] for level in self.levels}}

    def __call__(self, index: torch.Tensor, triggered: bool = False) -> dict:
        """{level: (len(index), d)} for the images at ``index``, in that order."""
        rows = self._row[triggered]
        missing = [i for i in dict.fromkeys(index.tolist()) if i not in rows]
        if missing:
            features = self.subject.extract(self.images[torch.tensor(missing, dtype=torch.long)], triggered,
                                            self.levels)
            store = self._store[triggered]
            for level in self.levels:
                store[level] = [torch.cat(store[level] + [features[level]])]
            for i in missing:
                rows[i] = len(rows)
        if len(index) == 0:
            return {level: torch.empty(0) for level in self.levels}
        positions = torch.tensor([rows[i] for i in index.tolist()], dtype=torch.long)
        return {level: self._store[triggered][level][0][positions] for level in self.levels}

    @property
    def extracted(self) -> int:
        """How many images (clean plus triggered) have been through the model so far."""
        return len(self._row[False]) + len(self._row[True])
