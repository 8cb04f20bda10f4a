"""What detectors beyond a pool's representations need, drawn once per evaluation and seeded:
feature maps and a small clean set of every class (maps), the pool's images and the model's
probabilities with held-out clean images (inputs), and the poisoned training set as labelled, whole
or in class-proportional samples, with a clean reserve and a size-only control (classes). See
defenses/detectors/detector.py for who consumes what."""
import numpy as np
import torch

from attacks.base import Attack
from attacks.poisoning import CLEAN, COVER, NOISE, POISONED, GroupTrigger, PoisonedData
from defenses import DetectorInputs
from defenses.defender import detector_clean_set
from defenses.detectors.detection import probabilities
from evaluation.representations import FeatureBank
from inference import Subject, extract
from models import LEVELS
from utils.seed import generator, sample

# the strata of an inspected sample inside a labelled class: clean, poisoned and cover rows
KINDS = (CLEAN, POISONED, COVER)


def proportional_counts(sizes: dict, total: int) -> dict:
    """{key: count}: min(total, Σ sizes) shared among the keys in proportion to ``sizes``, each
    key's count the floor of its exact share, the rest going one each to the largest remainders
    (ties in key order); never more than a key holds."""
    available = sum(sizes.values())
    total = min(int(total), available)
    if available == 0:
        return {key: 0 for key in sizes}
    counts = {key: total * size // available for key, size in sizes.items()}
    remainders = {key: total * size % available for key, size in sizes.items()}
    for key in sorted(sizes, key=lambda key: -remainders[key])[:total - sum(counts.values())]:
        counts[key] += 1
    return counts


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
        """(index, classes) of ``per_class`` clean training images the model predicts as each class
        (seeded; fewer where it predicts fewer): the defender's small clean set, grouped as Beatrix's
        reference groups its clean images, by the model's prediction (Beatrix: 30 per class)."""
        key = ("clean_per_class", per_class)
        if key not in self._cache:
            predicted = self.train_predictions()
            gen = generator(self.subject.seed, "detector-clean-per-class")
            index = torch.cat([sample((predicted == label).nonzero().flatten(), per_class, gen)
                               for label in range(self.subject.data.num_classes)])
            self._cache[key] = (index, predicted[index].numpy())
        return self._cache[key]

    def train_predictions(self) -> torch.Tensor:
        """The model's class for every clean training image (predicted once)."""
        if "train_predictions" not in self._cache:
            self._cache["train_predictions"] = self.subject.predict(self.subject.data.train_x).cpu()
        return self._cache["train_predictions"]

    def add_maps(self, inputs: DetectorInputs, detector_options, pool_features) -> None:
        per_class = getattr(detector_options, "clean_per_class", 30)
        index, labels = self.clean_per_class(per_class)
        inputs.maps = self._maps(pool_features, inputs.level)
        inputs.predicted = np.full(len(pool_features), self.subject.target)  # a pool holds inputs classed as the target
        inputs.clean_maps = self._maps(self.train_bank(index)[inputs.level].numpy(), inputs.level)
        inputs.clean_labels = labels
        # the pools at a level share most of their maps and all of their clean maps: Beatrix keeps
        # each map's deviation between them
        inputs.extra.setdefault("memo", self._cache.setdefault("maps_memo", {}))

    # inputs ---------------------------------------------------------------------------------
    def input_level(self, benign_index, malicious_index, detector_options) -> DetectorInputs:
        """The pool's images (clean benign ones, then the triggered malicious ones, as the pool's
        features are ordered), the model's probabilities, and the defender's clean images in two
        disjoint shares: the first (STRIP superimposes it, BaDExpert fine-tunes on it) and the fit
        share (STRIP's and BaDExpert's thresholds); TED and IBD-PSC read both."""
        data, attack = self.subject.data, self.subject.attack
        to_float = lambda images: images.float() / 255.0  # noqa: E731
        images = torch.cat([to_float(data.test_x[benign_index]), attack(to_float(data.test_x[malicious_index]))])
        first = getattr(detector_options, "overlay_pool", None) or getattr(detector_options, "clean_images", 500)
        fit = getattr(detector_options, "fit_samples", 500)
        held_out, held_out_labels = self._held_out(first + fit)
        if len(held_out) < first + fit:  # fewer clean images than asked for: both shares shrink alike
            first = len(held_out) * first // (first + fit)
        return DetectorInputs(seed=self.subject.seed, protocol=self.options, images=images,
                              predict_proba=self.predict_proba, overlay_images=to_float(held_out[:first]),
                              fit_images=to_float(held_out[first:]), fit_labels=held_out_labels[first:],
                              overlay_labels=held_out_labels[:first],
                              model=self.subject.model.eval(), batch_size=self.subject.batch_size,
                              extra={"memo": self._cache})  # shared by the pools: STRIP's fit entropies

    def _held_out(self, count: int) -> tuple:
        """(uint8 images, labels) of ``count`` seeded clean images from the defender's pool
        (defenses.defender.detector_clean_set); what it drew is in :meth:`clean_set_record`."""
        key = ("held_out", count)
        if key not in self._cache:
            data = self.subject.data
            drawn = detector_clean_set(data.train_x, data.train_y, data.outside_x, data.outside_y, count,
                                       self.subject.seed)
            self._cache[key] = (drawn.images, drawn.labels)
            self._cache.setdefault("clean_sets", []).append({**drawn.record(), "asked": count})
        return self._cache[key]

    def clean_set_record(self) -> list:
        """Where the input-level detectors' clean images came from, one entry per draw (each a prefix
        of one seeded order of the defender's pool; [] if none drawn)."""
        return self._cache.get("clean_sets", [])

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """The model's class probabilities of float images in [0, 1] (eval mode, batched)."""
        return probabilities(self.subject.model.eval(), images, self.subject.batch_size)

    # classes --------------------------------------------------------------------------------
    def class_sizes(self) -> list:
        """[(name, count)] of the inspected samples ``options.class_samples`` asks for, largest
        first: "all" (the whole poisoned training set, as a defender holds it) for 0 or for a size
        at least the set's, else the count written out; a size whose count another gives already
        runs once."""
        total = len(self._population()["rows"])
        counts = {total if size == 0 or size >= total else int(size) for size in self.options.class_samples}
        return [(self._name(count, total), count) for count in sorted(counts, reverse=True)]

    @staticmethod
    def _name(count: int, total: int) -> str:
        return "all" if count >= total else str(count)

    def class_protocol(self) -> dict:
        """What the class-level detectors inspected, for the record: the sampling, each size, the
        population it was drawn from and the size-only control."""
        population = self._population()
        return {"sampling": "class_proportional",
                "sampling_rule": "a seeded uniform sample of the poisoned training set as labelled that keeps every "
                                 "labelled class's share of the set and, inside a class, every kind's (clean, "
                                 "poisoned, cover); all = the whole set",
                "sizes": dict(self.class_sizes()), "headline_size": self.class_sizes()[0][0],
                "population": len(population["rows"]), "noise_rows_left_out": population["noise_left_out"],
                "size_control": "the same sample with every poisoned row replaced by a clean image of the target "
                                "class: clean training images of the target the sample leaves out, then clean test "
                                "images of the target outside the clean reserve, then the target's images a "
                                "--train_subset run leaves out; the class counts are the sample's unless these run "
                                "out (shortfall)"}

    def class_level(self, level: str, detector=None, name: str = None) -> tuple:
        """(inputs, truth) for a class-level detector at ``level`` on the inspected sample ``name``
        (one of class_sizes(); default the largest): its rows' features as the model saw them in
        training, their labels (a poisoned copy carries the target label and the trigger, so the
        target class's share of them is what poisoning put there), and a clean reserve of test
        images, which the attacker never touched; ``truth`` = {"labels", "poisoned"} of the sample."""
        name = name or self.class_sizes()[0][0]
        inspected = self._inspected(name)
        inputs = self._class_inputs(level, self._row_features(inspected["rows"], level).numpy(), inspected["labels"])
        return inputs, {"labels": inspected["labels"], "poisoned": inspected["poisoned"]}

    def class_control(self, level: str, name: str) -> tuple:
        """(inputs, facts): the size-only control of the inspected sample ``name`` at ``level``: the
        same rows and labels, each poisoned row replaced by a clean image of the target class (see
        class_protocol), so that what a class-level statistic gives the target there is what the
        class's size alone gives. ``facts``: how many rows were replaced from each source, the
        shortfall (poisoned rows left out for want of clean images) and the target's count."""
        inspected, plan = self._inspected(name), self._control_plan(name)
        features = self._row_features(inspected["rows"], level)
        data = self.subject.data
        sources = [(plan["training"], self.train_bank), (plan["test"], self.test_bank)]
        if len(plan["outside"]):
            sources.append((plan["outside"], self._outside_bank()))
        replacements = [bank(index)[level] for index, bank in sources if len(index)]
        if replacements:
            features[torch.from_numpy(plan["replaced_rows"])] = torch.cat(replacements)
        keep = torch.from_numpy(plan["keep"])
        labels = inspected["labels"][plan["keep"]]
        facts = {"replaced": int(len(plan["replaced_rows"])),
                 "sources": {"training": len(plan["training"]), "test": len(plan["test"]),
                             "outside": len(plan["outside"])},
                 "shortfall": int((~plan["keep"]).sum()),
                 "target_count": int((labels == self.subject.target).sum()),
                 "target_count_inspected": int((inspected["labels"] == self.subject.target).sum()),
                 "outside_available": data.outside_x is not None}
        return self._class_inputs(level, features[keep].numpy(), labels), facts

    def inspected_facts(self, name: str) -> dict:
        """The inspected sample ``name`` in numbers: its size, every labelled class's count, the
        poisoned rows and the target class's poisoned share."""
        inspected, target = self._inspected(name), self.subject.target
        labels, poisoned = inspected["labels"], inspected["poisoned"]
        in_target = labels == target
        return {"size": name, "count": int(len(labels)), "of": len(self._population()["rows"]),
                "class_counts": {str(label): int((labels == label).sum())
                                 for label in range(self.subject.data.num_classes)},
                "poisoned": int(poisoned.sum()), "cover": int((inspected["kind"] == COVER).sum()),
                "target_poisoned_share": float(poisoned[in_target].mean()) if in_target.any() else 0.0}

    def training_set(self, detector_options) -> tuple:
        """(inputs, poisoned): what a training-set detector reads (see DetectorInputs): every row of
        the poisoned training set as labelled (WaNet's noise-mode rows left out, as in the class
        protocol), the images as the model trained on them (unaugmented), the model's features of
        them at the detector's ``level``, and a base set of ``base_per_class`` clean images of every
        class drawn from the defender's pool (defenses.defender.detector_clean_set) with their
        features; ``poisoned`` (n,) bool is the truth."""
        level = getattr(detector_options, "level", LEVELS[-1])
        population = self._population()
        rows, poisoned_set = population["rows"], population["set"]
        images = torch.cat([poisoned_set.make_batch(chunk).x.cpu() for chunk in rows.split(4096)])
        data, per_class = self.subject.data, getattr(detector_options, "base_per_class", 100)
        pool = detector_clean_set(data.train_x, data.train_y, data.outside_x, data.outside_y,
                                  len(data.train_y) if data.outside_x is None else len(data.outside_y), self.subject.seed)
        base = torch.cat([(pool.labels == label).nonzero().flatten()[:per_class] for label in range(data.num_classes)])
        base_images = pool.images[base]
        self._cache["base_set"] = {**pool.record(), "images": int(len(base)), "per_class": per_class}
        inputs = DetectorInputs(seed=self.subject.seed, protocol=self.options, level=level,
                                training_images=images, training_labels=population["labels"][rows],
                                training_features=self._row_features(rows, level), base_images=base_images.float() / 255.0,
                                base_features=self.subject.extract(base_images, levels=(level,))[level],
                                model=self.subject.model.eval(), batch_size=self.subject.batch_size)
        return inputs, poisoned_set.kind[rows].numpy() == POISONED

    def base_set_record(self) -> dict:
        """Where a training-set detector's clean base set came from ({} if none drawn)."""
        return self._cache.get("base_set", {})

    def training_class(self, level: str) -> tuple:
        """(features (n, d), poisoned (n,) bool) of the target class of the whole poisoned training
        set as labelled, at ``level``: what SPECTRE's reference inspects (one training class, its
        poisoned share the attack's own)."""
        inspected = self._inspected("all")
        in_target = inspected["labels"] == self.subject.target
        rows = inspected["rows"][torch.from_numpy(in_target)]
        return self._row_features(rows, level).numpy(), inspected["poisoned"][in_target]

    def _class_inputs(self, level: str, features: np.ndarray, labels: np.ndarray) -> DetectorInputs:
        reserve = self._reserve()
        return DetectorInputs(level=level, seed=self.subject.seed, protocol=self.options, class_features=features,
                              class_labels=labels, clean_features=self.test_bank(reserve)[level].numpy(),
                              clean_labels=self.subject.data.test_y[reserve].numpy(),
                              map_shape=tuple(self.shapes()[level]),
                              # per-row results a detector may keep between the sizes and the controls,
                              # which share most rows (Beatrix's deviations)
                              extra={"memo": self._cache.setdefault("class_memo", {})})

    def _row_features(self, rows: torch.Tensor, level: str) -> torch.Tensor:
        """(len(rows), d) at ``level`` of rows of the poisoned set as the model saw them in training:
        clean rows as they are, poisoned and cover rows with the attack's training trigger (for the
        paper's attacks the test trigger, whose features the training bank holds once extracted;
        another's extracted once per row and kept)."""
        poisoned_set, subject = self._population()["set"], self.subject
        kind, base = poisoned_set.kind[rows], poisoned_set.base_index[rows]
        same_trigger = type(subject.attack).train_trigger is Attack.train_trigger
        parts = [(kind == CLEAN, lambda mask: self.train_bank(base[mask])[level])]
        for planted in (POISONED, COVER):
            if same_trigger:
                parts.append((kind == planted, lambda mask: self.train_bank(base[mask], triggered=True)[level]))
            else:
                parts.append((kind == planted, lambda mask, planted=planted: self._planted(rows[mask], planted, level)))
        found = [(mask, get(mask)) for mask, get in parts if mask.any()]
        if not found:
            return torch.empty((0, int(np.prod(self.shapes()[level]))))
        features = torch.empty((len(rows), found[0][1].shape[1]))
        for mask, part in found:
            features[mask] = part
        return features

    def _planted(self, rows: torch.Tensor, kind: int, level: str) -> torch.Tensor:
        """Features of poisoned or cover rows under an attack's own training trigger (GroupTrigger:
        each row's trigger from its place in its group), extracted once per row."""
        store = self._cache.setdefault("planted", {})
        missing = [int(row) for row in rows if int(row) not in store]
        if missing:
            subject, poisoned_set = self.subject, self._population()["set"]
            index = torch.tensor(missing, dtype=torch.long)
            group, size = (("poisoned", len(poisoned_set.poison_index)) if kind == POISONED
                           else ("cover", len(poisoned_set.cover_index)))
            planted = GroupTrigger(subject.attack, group, poisoned_set.ordinal[index], size)
            found = extract(subject.model, subject.data.train_x[poisoned_set.base_index[index]], subject.device,
                            LEVELS, subject.batch_size, planted, subject.amp)
            for position, row in enumerate(missing):
                store[row] = {name: found[name][position] for name in LEVELS}
        return torch.stack([store[int(row)][level] for row in rows])

    def _population(self) -> dict:
        """The poisoned training set as a defender holds it, every row as labelled, and one seeded
        order of every stratum (labelled class × kind of row) whose prefixes the samples take.
        WaNet's noise-mode rows are left out: their warp is drawn anew every epoch, so no one image
        stands for them (they keep their labels and are neither group)."""
        if "population" not in self._cache:
            subject = self.subject
            poisoned_set = self._poisoned_set()
            kind = poisoned_set.kind
            targets = torch.full_like(poisoned_set.base_index, subject.target)
            labels = torch.where(kind == POISONED, targets, subject.data.train_y[poisoned_set.base_index])
            rows = (kind != NOISE).nonzero().flatten()
            gen = generator(subject.seed, "detector-inspected")
            strata = {}
            for label in range(subject.data.num_classes):
                for stratum in KINDS:
                    members = rows[(labels[rows] == label) & (kind[rows] == stratum)]
                    strata[(label, stratum)] = members[torch.randperm(len(members), generator=gen)]
            self._cache["population"] = {"set": poisoned_set, "rows": rows, "labels": labels, "strata": strata,
                                         "noise_left_out": int((kind == NOISE).sum())}
        return self._cache["population"]

    def _inspected(self, name: str) -> dict:
        """The inspected sample ``name`` ("all", or a count): a seeded uniform sample of the
        population that keeps every labelled class's share (its count in proportion to the class's
        size, the largest remainders taking the rounding) and, inside a class, every kind's share,
        so that a class's size and its poisoned share are the training set's. Not as many of every
        class: SCAn's statistic grows with a class's size, and the defender inspects the classes as
        they are; the size-only control (class_control) says what size alone gives."""
        key = ("inspected", name)
        if key not in self._cache:
            population = self._population()
            strata, total = population["strata"], len(population["rows"])
            count = total if name == "all" else int(name)
            classes = range(self.subject.data.num_classes)
            sizes = {label: sum(len(strata[(label, stratum)]) for stratum in KINDS) for label in classes}
            chosen = []
            for label, share in proportional_counts(sizes, count).items():
                kinds = {stratum: len(strata[(label, stratum)]) for stratum in KINDS}
                chosen += [strata[(label, stratum)][:take] for stratum, take in proportional_counts(kinds, share).items()]
            rows = torch.cat(chosen).sort().values
            poisoned_set = population["set"]
            kind = poisoned_set.kind[rows].numpy()
            self._cache[key] = {"rows": rows, "base": poisoned_set.base_index[rows],
                                "labels": population["labels"][rows].numpy(), "kind": kind,
                                "poisoned": kind == POISONED}
        return self._cache[key]

    def _control_plan(self, name: str) -> dict:
        """Which clean target-class images replace the poisoned rows of sample ``name`` (seeded):
        first the clean training images of the target that the sample leaves out (the model trained
        on them, as on the rows they replace), then clean test images of the target outside the
        reserve, then the target's images a --train_subset run leaves out."""
        key = ("control", name)
        if key not in self._cache:
            subject, data, target = self.subject, self.subject.data, self.subject.target
            inspected, population = self._inspected(name), self._population()
            poisoned_rows = np.flatnonzero(inspected["poisoned"])
            needed = len(poisoned_rows)
            gen = generator(subject.seed, "detector-size-control")
            clean_target = population["strata"][(target, CLEAN)]
            left_out = clean_target[~torch.isin(clean_target, inspected["rows"])]
            training = population["set"].base_index[sample(left_out, needed, gen)]
            in_reserve = torch.zeros(len(data.test_y), dtype=torch.bool)
            in_reserve[self._reserve()] = True
            test = sample(((data.test_y == target) & ~in_reserve).nonzero().flatten(), needed - len(training), gen)
            outside = torch.empty(0, dtype=torch.long)
            if data.outside_x is not None and needed > len(training) + len(test):
                outside = sample((data.outside_y == target).nonzero().flatten(), needed - len(training) - len(test),
                                 gen)
            replaced = len(training) + len(test) + len(outside)
            keep = np.ones(len(inspected["labels"]), dtype=bool)
            keep[poisoned_rows[replaced:]] = False
            self._cache[key] = {"training": training, "test": test, "outside": outside,
                                "replaced_rows": poisoned_rows[:replaced], "keep": keep}
        return self._cache[key]

    def _outside_bank(self) -> FeatureBank:
        if "outside_bank" not in self._cache:
            self._cache["outside_bank"] = FeatureBank(self.subject, self.subject.data.outside_x)
        return self._cache["outside_bank"]

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
