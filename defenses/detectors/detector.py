"""What a detector is, for the registry every evaluation reads (``defenses.DETECTORS``).

A detector is one file that defines its function, its options and a :class:`Detector` record, and
one line in ``defenses/__init__.py`` that registers the record. The evaluation
(``evaluation/protocol.py``) gives it what it ``consumes``, scores its output against the truth
and stores it under its name; reports and figures take its display name and rules from here.

What a detector consumes, and what the evaluation hands it (a :class:`DetectorInputs`):

    pool     a detection pool's (N, d) representations at one level, the defender's clean
             reference of the target class, and the pool's malicious count (an oracle budget)
    maps     the same pool's feature maps (N, C, H, W) at one level, and a small clean set of
             every class's maps
    inputs   the pool's images, the model's class probabilities, held-out clean training images
             with their labels, and the model itself; no level (input-level)
    classes  every class of a sample of the poisoned training set as labelled, and a clean
             reserve of every class, at one level: a class-level verdict (which class is poisoned)
    training the whole poisoned training set as labelled (its images as the model trained on them,
             their labels and the model's features of them at one level), a clean base set of
             every class from the defender's data, and the model: a per-sample verdict over the
             training set, once per evaluation
"""
import re
from dataclasses import dataclass, field
from typing import Callable

CONSUMES = ("pool", "maps", "inputs", "classes", "training")
HEADLINE_RULES = ("own", "oracle")


@dataclass(frozen=True)
class Detector:
    """A registered detector.

    ``run(inputs, options, seed)`` returns a :class:`defenses.detectors.detection.Detection` (per-sample
    flags and scores; ``variants`` for other forms it also computes) or, for ``classes``, a
    :class:`ClassVerdict`. ``options`` is the dataclass of its parameters (declared with
    ``utils.params.param``; its flags are ``--<name>_<field>``), or None. ``headline`` names the
    F1 reported first: ``own`` (its own decision rule) or ``oracle`` (the best threshold chosen
    with the ground truth, labelled as such wherever it is shown). ``paper`` marks the three
    detectors of the paper's §6.1, on which its claims rest."""

    name: str
    display: str
    source: str
    consumes: str
    run: Callable
    options: type = None
    headline: str = "own"
    rule: Callable = None        # (its options, the EvalOptions) -> how its headline rule reads in a report
    paper: bool = False
    latent: bool = None          # whether it reads representations (None: all but input-level ones do)

    def __post_init__(self):
        if self.latent is None:
            object.__setattr__(self, "latent", self.consumes != "inputs")
        if self.consumes not in CONSUMES:
            raise ValueError(f"detector {self.name}: consumes must be one of {CONSUMES}, got {self.consumes!r}")
        if self.headline not in HEADLINE_RULES:
            raise ValueError(f"detector {self.name}: headline must be one of {HEADLINE_RULES}, got {self.headline!r}")

    @property
    def year(self):
        """The year it was published, the first year its ``source`` names (None where it names none)."""
        found = re.search(r"\b(19|20)\d\d\b", self.source)
        return int(found.group(0)) if found else None

    @property
    def has_levels(self) -> bool:
        """Whether it runs at every level (s1 s2 s3); an input-level or training-set detector runs once."""
        return self.consumes not in ("inputs", "training")

    def default_options(self):
        return self.options() if self.options is not None else None

    def describe(self, options=None, protocol=None) -> str:
        """Its headline rule in words, from the options in force (never restated elsewhere)."""
        text = self.rule(options, protocol) if self.rule is not None else "its own decision rule"
        return text + (" (an oracle: chosen with the ground truth)" if self.headline == "oracle" else "")


@dataclass
class DetectorInputs:
    """What the evaluation hands a detector; each detector reads the fields of what it consumes."""

    level: str = None
    seed: int = 0
    protocol: object = None              # the EvalOptions of the evaluation (AC, SS and SR read theirs there)
    features: object = None              # pool: (N, d) float array
    reference: object = None             # pool: (R, d) clean target-class reference (training set)
    expected_malicious: int = 0          # pool: the pool's true malicious count (an oracle, as SS's budget)
    maps: object = None                  # maps: (N, C, H, W) float array
    predicted: object = None             # maps: (N,) the class the model gives each pool input
    clean_maps: object = None            # maps/classes: (M, C, H, W) clean maps of every class
    clean_labels: object = None          # maps/classes: (M,) their classes
    images: object = None                # inputs: (N, C, H, W) float images in [0, 1]
    predict_proba: Callable = None       # inputs: images -> (n, classes) probabilities
    overlay_images: object = None        # inputs: held-out clean images to superimpose
    fit_images: object = None            # inputs: held-out clean images that fit a threshold
    fit_labels: object = None            # inputs: their true classes
    overlay_labels: object = None        # inputs: the overlay images' true classes
    model: object = None                 # inputs: the model itself, in evaluation mode (parameter-space detectors)
    batch_size: int = None               # inputs: images per forward pass
    class_features: object = None        # classes: (M, d) inspected training sample as labelled
    class_labels: object = None          # classes: (M,) their labels (poisoned ones carry the target)
    clean_features: object = None        # classes: (K, d) clean reserve
    training_images: object = None       # training: (n, C, H, W) float rows as the model trained on them
    training_labels: object = None       # training: (n,) their labels as given
    training_features: object = None     # training: (n, d) the model's features of them at the detector's level
    base_images: object = None           # training: (b, C, H, W) float clean base images of every class
    base_features: object = None         # training: (b, d) their features at the same level
    map_shape: tuple = None              # maps/classes: (C, H, W) of the level's maps; a row of features is one map, flat
    extra: dict = field(default_factory=dict)

    def every_clean_image(self) -> tuple:
        """(images, labels): both shares of the defender's clean draw, the first share then the fit share."""
        import torch

        return (torch.cat([torch.as_tensor(self.overlay_images), torch.as_tensor(self.fit_images)]),
                torch.cat([torch.as_tensor(self.overlay_labels), torch.as_tensor(self.fit_labels)]))


@dataclass
class ClassVerdict:
    """A class-level detector's answer: a statistic per class, the classes it flags, and per
    inspected sample the flags inside the flagged classes (for a per-sample F1)."""

    statistic: dict                      # {class: value}
    flagged_classes: list
    flagged: object = None               # (M,) bool over the inspected samples
    threshold: float = None
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"statistic": {str(k): float(v) for k, v in self.statistic.items()},
                "flagged_classes": [int(c) for c in self.flagged_classes], "threshold": self.threshold,
                **self.info}
