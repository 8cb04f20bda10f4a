"""What detectors beyond a pool's representations need, drawn once per evaluation and seeded:
feature maps and a small clean set of every class (maps), the pool's images and the model's
probabilities with held-out clean images (inputs), and a sample of the poisoned training set as
labelled with a clean reserve (classes). See defenses/detectors/detector.py for who consumes what."""
import numpy as np
import torch

from attacks.base import Attack
from attacks.poisoning import CLEAN, COVER, NOISE, POISONED, GroupTrigger, PoisonedData
from defenses import DetectorInputs
from evaluation.representations import FeatureBank
from inference import Subject, extract
from models import LEVELS
from utils.seed import generator, sample


class DetectionContext:
    """Lazily draws and caches the extra inputs, so a detector that is not selected costs nothing
    and two that share an input (Beatrix's clean maps, SCAn's reserve) draw it once."""

    def __init__(self, subject: Subject, options, train_bank: FeatureBank, test_bank: FeatureBank):
        """``train_bank`` and ``test_bank``: the evaluation's banks of the two sets, so an image the
        distances or the pools already passed through the model is not passed again."""
        self.subject, self.options, self.train_bank, self.test_bank = subject, options, train_bank, test_bank
        self._shapes = None
        self._cache = {}

    # maps -----------------------------------------------------------------------------------
    def shapes(self) -> dict:
        """{level: (C, H, W)}: each tap's map shape, from one image (FeatureBank stores them flat)."""
        if self._shapes is None:
            from inference import tap_shapes

            self._shapes = tap_shapes(self.subject.model, self.subject.data.test_x[:1], self.subject.device)
        return self._shapes

    def _maps(self, flat, level: str) -> np.ndarray:
        return np.asarray(flat).reshape(len(flat), *self.shapes()[level])

    def clean_per_class(self, per_class: int) -> tuple:
        """(index, labels) of ``per_class`` clean training images of every class (seeded): the
        defender's small clean set (Beatrix: 30 per class)."""
        key = ("clean_per_class", per_class)
        if key not in self._cache:
            labels = self.subject.data.train_y
            gen = generator(self.subject.seed, "detector-clean-per-class")
            index = torch.cat([sample((labels == label).nonzero().flatten(), per_class, gen)
                               for label in range(self.subject.data.num_classes)])
            self._cache[key] = (index, labels[index].numpy())
        return self._cache[key]

    def add_maps(self, inputs: DetectorInputs, detector_options, pool_features) -> None:
        per_class = getattr(detector_options, "clean_per_class", 30)
        index, labels = self.clean_per_class(per_class)
        inputs.maps = self._maps(pool_features, inputs.level)
        inputs.predicted = np.full(len(pool_features), self.subject.target)  # a pool holds inputs classed as the target
        inputs.clean_maps = self._maps(self.train_bank(index)[inputs.level].numpy(), inputs.level)
        inputs.clean_labels = labels

    # inputs ---------------------------------------------------------------------------------
    def input_level(self, benign_index, malicious_index, detector_options) -> DetectorInputs:
        """The pool's images (clean benign ones, then the triggered malicious ones, as the pool's
        features are ordered), the model's probabilities, and held-out clean training images to
        superimpose and to fit the threshold (STRIP)."""
        data, attack = self.subject.data, self.subject.attack
        to_float = lambda images: images.float() / 255.0  # noqa: E731
        images = torch.cat([to_float(data.test_x[benign_index]), attack(to_float(data.test_x[malicious_index]))])
        overlay_count = getattr(detector_options, "overlay_pool", 500)
        held_out = self._held_out(overlay_count + getattr(detector_options, "fit_samples", 500))
        return DetectorInputs(seed=self.subject.seed, protocol=self.options, images=images,
                              predict_proba=self.predict_proba, overlay_images=to_float(held_out[:overlay_count]),
                              fit_images=to_float(held_out[overlay_count:]),
                              extra={"memo": self._cache})  # shared by the pools: STRIP's fit entropies

    def _held_out(self, count: int) -> torch.Tensor:
        key = ("held_out", count)
        if key not in self._cache:
            index = sample(torch.arange(len(self.subject.data.train_y)), count,
                           generator(self.subject.seed, "detector-held-out"))
            self._cache[key] = self.subject.data.train_x[index]
        return self._cache[key]

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """The model's class probabilities of float images in [0, 1] (eval mode, batched)."""
        model, device = self.subject.model, self.subject.device
        model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.subject.batch_size):
                batch = images[start:start + self.subject.batch_size].to(device)
                out.append(torch.softmax(model(batch).float(), 1).cpu())
        return torch.cat(out) if out else torch.empty(0)

    # classes --------------------------------------------------------------------------------
    def class_level(self, level: str, detector) -> tuple:
        """(inputs, truth) for a class-level detector at ``level``: a seeded sample of the poisoned
        training set as labelled, as many of every class (a poisoned copy carries the target label
        and the trigger, so the target class's share of them is what poisoning put there), and a
        clean reserve of test images, which the attacker never touched; ``truth`` = {"labels",
        "poisoned"} of the inspected sample."""
        inspected = self._inspected()
        reserve = self._reserve()
        inputs = DetectorInputs(level=level, seed=self.subject.seed, protocol=self.options,
                                class_features=self._inspected_features()[level].numpy(),
                                class_labels=inspected["labels"],
                                clean_features=self.test_bank(reserve)[level].numpy(),
                                clean_labels=self.subject.data.test_y[reserve].numpy(),
                                map_shape=tuple(self.shapes()[level]))
        return inputs, {"labels": inspected["labels"], "poisoned": inspected["poisoned"]}

    def _inspected_features(self) -> dict:
        """{level: (M, d)} of the inspected sample as the model saw it in training: clean rows as they
        are, poisoned and cover rows with the attack's training trigger (for the paper's attacks
        the test trigger, whose features the bank may hold already)."""
        if "inspected_features" not in self._cache:
            inspected, subject = self._inspected(), self.subject
            def of(rows):
                return inspected["base"][torch.from_numpy(rows)]
            parts = [(inspected["kind"] == CLEAN, self.train_bank(of(inspected["kind"] == CLEAN)))]
            same_trigger = type(subject.attack).train_trigger is Attack.train_trigger
            for kind, group, size in ((POISONED, "poisoned", inspected["poisoned_count"]),
                                      (COVER, "cover", inspected["cover_count"])):
                rows = inspected["kind"] == kind
                if same_trigger and kind == POISONED:
                    parts.append((rows, self.train_bank(of(rows), triggered=True)))
                elif rows.any():
                    planted = GroupTrigger(subject.attack, group, inspected["ordinal"][torch.from_numpy(rows)], size)
                    parts.append((rows, extract(subject.model, subject.data.train_x[of(rows)],
                                                subject.device, LEVELS, subject.batch_size, planted, subject.amp)))
            features = {}
            for level in LEVELS:
                width = next(part[level].shape[1] for rows, part in parts if rows.any())
                features[level] = torch.empty((len(inspected["kind"]), width))
                for rows, part in parts:
                    if rows.any():
                        features[level][torch.from_numpy(rows.nonzero()[0])] = part[level]
            self._cache["inspected_features"] = features
        return self._cache["inspected_features"]

    def _inspected(self) -> dict:
        if "inspected" not in self._cache:
            subject, data = self.subject, self.subject.data
            poisoned_set = self._poisoned_set()
            # WaNet's noise-mode images keep their labels: left out, as neither group
            keep = poisoned_set.kind != NOISE
            targets = torch.full_like(poisoned_set.base_index, subject.target)
            labelled = torch.where(poisoned_set.kind == POISONED, targets, data.train_y[poisoned_set.base_index])
            # as many of every labelled class: SCAn's statistic grows with a class's size, and the
            # poisoned copies would otherwise make the target class look anomalous for its size alone
            gen = generator(subject.seed, "detector-inspected")
            per_class = max(1, self.options.class_samples // data.num_classes)
            chosen = torch.cat([sample((keep & (labelled == label)).nonzero().flatten(), per_class, gen)
                                for label in range(data.num_classes)])
            base = poisoned_set.base_index[chosen]
            kind = poisoned_set.kind[chosen].numpy()
            labels = labelled[chosen].numpy()
            self._cache["inspected"] = {"base": base, "labels": labels, "poisoned": kind == POISONED, "kind": kind,
                                        "ordinal": poisoned_set.ordinal[chosen],
                                        "poisoned_count": len(poisoned_set.poison_index),
                                        "cover_count": len(poisoned_set.cover_index)}
        return self._cache["inspected"]

    def _poisoned_set(self) -> PoisonedData:
        subject = self.subject
        return PoisonedData(subject.data.train_x, subject.data.train_y, subject.attack, subject.target,
                            subject.poison_ratio, subject.poison_mode, subject.seed, augment=False,
                            cover_ratio=subject.cover_ratio)

    def _reserve(self) -> torch.Tensor:
        if "reserve" not in self._cache:
            self._cache["reserve"] = sample(torch.arange(len(self.subject.data.test_y)), self.options.clean_reserve,
                                            generator(self.subject.seed, "detector-clean-reserve"))
        return self._cache["reserve"]
