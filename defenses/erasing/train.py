"""Erasing a backdoor from a trained model with a little clean data: fine-tuning, NAD and ARGD.

The defender holds 5% of the attacker's training-set size, clean images drawn apart from the
attacker's (defenses/defender.py; the NAD and ARGD code's ``--ratio 0.05``), plus a disjoint clean
validation set that only its choices look at. It trains the backdoored model on its share with random crop
(pad 4), horizontal flip and Cutout with one hole of length 3 (the NAD code's augmentation), SGD
with momentum 0.9, weight decay 1e-4, Nesterov, batch 64, and a learning rate that steps down in
phases (``lrs`` from the epochs ``lr_epochs``), each phase's rate the reference's:

- fine-tuning: cross-entropy only, all layers, 10 epochs at 0.1 for 2 then 0.01. This is how NAD's
  issue threads (#2, #3) make NAD's teacher: "finetuning all layers of the backdoored model using 5%
  clean data with data augmentation" for 5-10 epochs, NAD's training code with every β = 0 (so NAD's
  schedule). Its model is also NAD's and ARGD's teacher.
- NAD: cross-entropy + Σ_l β_l·attention_loss against the frozen teacher (defenses/erasing/distillation.py),
  β = 500, 1000, 1000, 20 epochs at 0.1 for 2 then 0.01 (the NAD code's config.py and
  adjust_learning_rate).
- ARGD: cross-entropy + the attention relation graph loss, 10 epochs at 0.1 for epochs 1-3, 0.01
  for 4-6 and 0.001 for 7-10 (the ARGD code's adjust_learning_rate, called with 0-based epochs).

``lr_scale`` and ``beta_scale`` multiply every phase's rate and every attention weight: the knobs
of the defender-side tuning (defenses/erasing/tuning.py), 1 being the reference.

Each defense returns BA and ASR before, after and per epoch, the validation accuracy, and whether
the model collapsed (more than half of the clean test images sent to one class,
inference.COLLAPSE_SHARE), in which case its ASR measures nothing. The model is changed in place.
"""
import bisect
import math
import time
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from datasets.augment import cutout, random_crop_flip
from datasets.base import stratified_subset
from defenses.defender import SHARE_OF, DefenderData, defender_split
from defenses.erasing.distillation import LEVELS, ARGDLoss, nad_loss
from inference import (Subject, clean_and_triggered_predictions, collapsed_to, dominant_class, predict, recording,
                       source_classes, to_unit)
from inference import ba_asr as score_ba_asr
from metrics.erasing import last_epochs_asr
from models import tap_modules
from utils.errors import ParameterError, UserError
from utils.params import check_params, param
from utils.progress import bar_disabled
from utils.seed import derive_seed, generator


@dataclass
class DefenderOptions:
    """The defender's data, shared by every erasing defense and the tuning: ``--defense_ratio``,
    ``--defense_share_of``, ``--defense_validation``, ``--defense_batch_size`` and
    ``--no_defense_augment`` are one flag each for all of them."""

    defense_ratio: float = param(0.05, "the defender's share, of the attacker's training-set size (or of what "
                                 "--defense_share_of names), drawn from the images outside the attacker's "
                                 "--train_subset when there are enough, else clean copies of its training images "
                                 "(NAD/ARGD: 0.05)", low=0.0, high=1.0, low_open=True, flag="--defense_ratio")
    defense_share_of: str = param("attacker", "what --defense_ratio is a share of: 'attacker', the attacker's "
                                  "training set (NAD/ARGD: 5% of the data the model was trained on; 500 images "
                                  "for a 10,000-image --train_subset), or 'whole', the dataset's whole training set "
                                  "(3,000 of Fashion-MNIST's 60,000: the sensitivity arm)", choices=SHARE_OF,
                                  flag="--defense_share_of")
    defense_validation: int = param(1000, "clean validation images drawn apart from the defender's share, for the "
                                    "defender's own choices (tuning); fewer when the pool runs out", low=1,
                                    flag="--defense_validation")
    defense_batch_size: int = param(64, "the defender's batch size (NAD/ARGD: 64)", low=1,
                                    flag="--defense_batch_size")
    defense_augment: bool = param(True, "train the defender's data without random crop (pad 4), flip and "
                                  "Cutout(1 hole, length 3) (the NAD code's augmentation)",
                                  flag="--no_defense_augment")
    defense_eval_subset: int = param(0, "measure each epoch's BA/ASR on a seeded stratified subset of this many "
                                     "clean test images (and their triggered non-target ones) instead of the whole "
                                     "test set, which the references use; before and after are always measured on "
                                     "the whole test set (0: the whole test set every epoch). Per-epoch test "
                                     "evaluation is most of an erasing's time on a CPU", low=0,
                                     flag="--defense_eval_subset")

    def defender(self) -> dict:
        """The four data fields, e.g. to give a teacher's fine-tuning the same data."""
        return {key: getattr(self, key) for key in DEFENDER_FIELDS}


DEFENDER_FIELDS = tuple(f.name for f in fields(DefenderOptions))


@dataclass
class ErasingOptions(DefenderOptions):
    """What every erasing defense shares. The optimiser's momentum, weight decay and Nesterov term
    are the NAD code's and not flags."""

    tuned_settings: str = param("", "apply the lr and β multipliers chosen by a tuning (a defense_tune.json, or "
                                "the run directory holding it: as a defender tunes, the run being erased itself, "
                                "after 'defend.py --defense tune' on it) instead of --*_lr_scale and --*_beta_scale", flag="--tuned_settings")
    epochs: int = param(10, "epochs", low=1)
    lrs: tuple = param((0.1, 0.01), "SGD learning rate of each phase", low=0.0, low_open=True, nargs="+", type=float)
    lr_epochs: tuple = param((2,), "the epochs (0-based) at which the second, third, … phase starts", low=1,
                             nargs="*", type=int)
    lr_scale: float = param(1.0, "multiplies every phase's learning rate (1: the reference's)", low=0.0,
                            low_open=True)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = True

    def __post_init__(self):
        self.lrs, self.lr_epochs = tuple(self.lrs), tuple(self.lr_epochs)
        check_params(self)
        if len(self.lr_epochs) != len(self.lrs) - 1:
            raise ParameterError("lr_epochs", f"needs one epoch per phase after the first ({len(self.lrs) - 1} for "
                                              f"lrs {' '.join(f'{v:g}' for v in self.lrs)}), got {list(self.lr_epochs)}")
        if list(self.lr_epochs) != sorted(set(self.lr_epochs)):
            raise ParameterError("lr_epochs", f"must increase, got {list(self.lr_epochs)}")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of 0-based ``epoch``: the phase it falls in, times ``lr_scale``."""
        return round(self.lrs[bisect.bisect_right(self.lr_epochs, epoch)] * self.lr_scale, 12)  # 0.1 × 0.1 prints as 0.01

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass
class FinetuneOptions(ErasingOptions):
    """Fine-tuning, also NAD's teacher (NAD issues #2, #3): each field is a defend.py flag ``--ft_<name>``."""

    epochs: int = param(10, "epochs (NAD's README: 5-10)", low=1)


@dataclass
class DistillationOptions(ErasingOptions):
    """What NAD and ARGD add: a teacher and the weight of the attention terms."""

    teacher: str = param("", "teacher checkpoint of the run's architecture (default: the run's fine-tuned model, "
                         "defense finetune at the same --defense_ratio, run first when missing)", flag="--teacher")
    teacher_epochs: int = param(10, "epochs of that fine-tuning when it runs first (NAD's README: 5-10), at "
                                "fine-tuning's schedule times this defense's --*_lr_scale", low=1,
                                flag="--teacher_epochs")
    epochs: int = param(20, "epochs", low=1)
    beta_scale: float = param(1.0, "multiplies every attention-term weight β (1: the reference's). NAD's loss is a "
                              "mean over the H·W pixels of unit-norm maps, so the same β weighs a 4×4 map 64× more "
                              "than WRN-16-1's 32×32 one it was set for", low=0.0)
    p: float = param(2.0, "power p of the attention map Σ_c |f_c|^p (NAD: 2)", low=0.0, low_open=True)


@dataclass
class NADOptions(DistillationOptions):
    """NAD (the NAD code's config.py): each field is a defend.py flag ``--nad_<name>``."""

    epochs: int = param(20, "epochs (NAD: 20)", low=1)
    betas: tuple = param((500.0, 1000.0, 1000.0), "attention-loss weights β of s1 s2 s3 (NAD: 500 1000 1000)",
                         low=0.0, nargs=3, type=float)


@dataclass
class ARGDOptions(DistillationOptions):
    """ARGD (the ARGD code's riman_distance.py and adjust_learning_rate): each field is a defend.py
    flag ``--argd_<name>``."""

    epochs: int = param(10, "epochs (ARGD: 10)", low=1)
    lrs: tuple = param((0.1, 0.01, 0.001), "SGD learning rate of each phase (ARGD: 0.1 0.01 0.001)", low=0.0,
                       low_open=True, nargs="+", type=float)
    lr_epochs: tuple = param((3, 6), "the epochs (0-based) at which the second, third, … phase starts (ARGD: 3 6)",
                             low=1, nargs="*", type=int)
    vertex_betas: tuple = param((2000.0, 5000.0, 2000.0), "vertex (attention-loss) weights of s1 s2 s3 "
                                "(ARGD: 2000 5000 2000)", low=0.0, nargs=3, type=float)
    edge_weight: float = param(1.0, "weight of the edge loss (ARGD: 1)", low=0.0)
    embed_weight: float = param(1.0, "weight of the embedding (cross-level attention) loss (ARGD: 1)", low=0.0)
    embed_dim: int = param(128, "query/key dimension of the embedding loss (ARGD: 128)", low=1)
    embed_trainable: bool = param(False, "optimise the embedding module's parameters with the student, as "
                                  "Show, Attend and Distill does (the ARGD code leaves them, and the positional "
                                  "terms, frozen at their seeded random initialisation)")


def defender_data(data, options: DefenderOptions, seed: int) -> DefenderData:
    """The defender's share and validation set of ``data`` (an ImageDataset) for ``options``."""
    return defender_split(data.train_x, data.train_y, getattr(data, "outside_x", None), getattr(data, "outside_y", None),
                          options.defense_ratio, options.defense_validation, seed, options.defense_share_of)


def epoch_batches(count: int, batch_size: int, rng: torch.Generator) -> list:
    """A shuffled epoch in batches; a last batch of one image is dropped (BatchNorm cannot train on it)."""
    batches = list(torch.randperm(count, generator=rng).split(batch_size))
    return batches[:-1] if len(batches) > 1 and len(batches[-1]) == 1 else batches


class Eraser:
    """Trains ``model`` in place on (images, labels) with cross-entropy, plus
    ``distill(student_levels, teacher_levels) -> (loss, terms)`` against the frozen ``teacher`` when
    given; one call of :meth:`train_epoch` is one shuffled pass over the data."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, options: ErasingOptions,
                 device, rng: torch.Generator, distill=None, teacher: nn.Module = None, extra_parameters=()):
        self.model, self.images, self.labels, self.options = model, images, labels, options
        self.device, self.rng, self.distill, self.teacher = torch.device(device), rng, distill, teacher
        self.optimizer = torch.optim.SGD([*model.parameters(), *extra_parameters], lr=options.lr_at(0),
                                         momentum=options.momentum, weight_decay=options.weight_decay,
                                         nesterov=options.nesterov)
        self.student_taps = tap_modules(model, LEVELS)
        self.teacher_taps = tap_modules(teacher, LEVELS) if teacher is not None else {}

    def batches(self):
        """(inputs on the device in [0, 1], labels) of one epoch, augmented as the options say."""
        for index in epoch_batches(len(self.images), self.options.defense_batch_size, self.rng):
            batch = self.images[index]
            if self.options.defense_augment:
                batch = cutout(random_crop_flip(batch, self.rng), self.rng, holes=1, length=3)
            yield to_unit(batch, self.device), self.labels[index].to(self.device, non_blocking=True)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple:
        """(loss, detached terms) of one batch."""
        with recording(self.model, self.student_taps) as student_levels:
            logits = self.model(inputs)
        loss = F.cross_entropy(logits, targets)
        terms = {"ce": loss.detach()}
        if self.distill is not None:
            with torch.no_grad(), recording(self.teacher, self.teacher_taps) as teacher_levels:
                self.teacher(inputs)
            extra, parts = self.distill(dict(student_levels), dict(teacher_levels))
            loss = loss + extra
            terms.update({key: value.detach() for key, value in parts.items()})
        terms["loss"] = loss.detach()
        return loss, terms

    def train_epoch(self, epoch: int) -> dict:
        """One epoch at the options' learning rate for ``epoch`` (0-based); the mean loss terms."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.options.lr_at(epoch)
        self.model.train()
        sums, steps = {}, 0
        for inputs, targets in self.batches():
            loss, terms = self.loss(inputs, targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for key, value in terms.items():
                sums[key] = sums[key] + value if key in sums else value
            steps += 1
        return {key: (value / steps).item() for key, value in sums.items()}


def validation_correct(model: nn.Module, data: DefenderData, device, batch_size: int = 512) -> int:
    """How many of the defender's clean validation images ``model`` classifies correctly: an exact
    count, which the tuning's tolerance compares (defenses/erasing/tuning.py)."""
    predictions = predict(model, data.validation_images, device, batch_size)
    return int((predictions == data.validation_labels).sum().item())


def validation_accuracy(model: nn.Module, data: DefenderData, device, batch_size: int = 512) -> float:
    """Top-1 accuracy on the defender's clean validation set (for display; choices compare
    :func:`validation_correct`)."""
    return validation_correct(model, data, device, batch_size) / len(data.validation_labels)


def measure(subject: Subject, data: DefenderData, test: bool = True, test_index: torch.Tensor = None) -> dict:
    """The defender's validation accuracy and count of correct validation images
    (``validation_correct``, what choices compare) and, with ``test``, BA and ASR on the test set
    (the images of ``test_index`` only, when given), the class the model predicts most on the clean
    test images with its share, and ``collapsed_to_class`` (that class when its share is above
    inference.COLLAPSE_SHARE, else None)."""
    correct = validation_correct(subject.model, data, subject.device, subject.batch_size)
    result = {"validation_accuracy": correct / len(data.validation_labels), "validation_correct": correct}
    if not test:
        return result
    test_x, test_y = subject.data.test_x, subject.data.test_y
    if test_index is not None:
        test_x, test_y = test_x[test_index], test_y[test_index]
    clean, triggered = clean_and_triggered_predictions(subject.model, test_x, test_y, subject.attack, subject.target,
                                                       subject.device, subject.batch_size, subject.amp)
    label, share = dominant_class(clean)
    return {**score_ba_asr(clean, test_y, triggered, subject.target, source_classes(subject.attack)), **result,
            "top_class": label, "top_class_share": share, "collapsed_to_class": collapsed_to(clean)}


def erase(subject: Subject, options: ErasingOptions, name: str, distill=None, teacher: nn.Module = None,
          extra_parameters=(), progress: bool = True, test: bool = True, data: DefenderData = None) -> dict:
    """Run an :class:`Eraser` on the defender's data for ``options.epochs``, measuring before and
    after each epoch (:func:`measure`; without ``test`` the validation accuracy alone, as the
    tuning needs). Returns {defense, clean_samples, defender, options, before, after,
    collapsed_to_class (after the last epoch), collapsed_epochs, asr_last5, history (one row per
    epoch, epoch 0 = before), seconds}."""
    data = data or defender_data(subject.data, options, subject.seed)
    eraser = Eraser(subject.model, data.images, data.labels, options, subject.device,
                    generator(subject.seed, f"erase-{name}"), distill, teacher, extra_parameters)
    started = time.perf_counter()
    subset = (stratified_subset(subject.data.test_y, options.defense_eval_subset, derive_seed(subject.seed, "erase-eval"))
              if test and 0 < options.defense_eval_subset < len(subject.data.test_y) else None)
    before = measure(subject, data, test)
    history = [{"epoch": 0, "lr": None, **(before if subset is None else measure(subject, data, test, subset)),
                "seconds": 0.0}]
    for epoch in tqdm(range(options.epochs), desc=name, disable=bar_disabled(progress), dynamic_ncols=True):
        epoch_started = time.perf_counter()
        means = eraser.train_epoch(epoch)
        if not all(math.isfinite(value) for value in means.values()):
            raise UserError(f"{name} diverged at epoch {epoch + 1} ({', '.join(f'{k}={v:.4g}' for k, v in means.items())}); "
                            f"lower its learning rate (lr={options.lr_at(epoch):g})")
        history.append({"epoch": epoch + 1, "lr": options.lr_at(epoch), **means,
                        **measure(subject, data, test, subset), "seconds": round(time.perf_counter() - epoch_started, 3)})
    subject.model.eval()
    after = {key: history[-1][key] for key in before} if subset is None else measure(subject, data, test)
    result = {"defense": name, "clean_samples": len(data.images), "defender": data.record(),
              "epoch_test_images": len(subject.data.test_y) if subset is None else len(subset),
              "options": options.to_dict(), "before": before, "after": after, "history": history,
              "seconds": round(time.perf_counter() - started, 3)}
    if test:
        result.update(collapsed_to_class=after["collapsed_to_class"],
                      collapsed_epochs=[row["epoch"] for row in history[1:] if row["collapsed_to_class"] is not None])
        result["asr_last5"] = last_epochs_asr(result)
    return result


def frozen(teacher: nn.Module) -> nn.Module:
    """The teacher in eval mode (its BatchNorm statistics fixed) with no gradients."""
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def finetune(subject: Subject, options: FinetuneOptions = None, progress: bool = True, **erase_args) -> dict:
    """Fine-tuning all layers with cross-entropy on the defender's clean data."""
    return erase(subject, options or FinetuneOptions(), "finetune", progress=progress, **erase_args)


def nad_distiller(options: NADOptions):
    """NAD's distillation term as ``(student_levels, teacher_levels) -> (loss, terms)``."""
    betas = {level: beta * options.beta_scale for level, beta in zip(LEVELS, options.betas)}
    return lambda student, teacher: nad_loss(student, teacher, betas, options.p)


def nad(subject: Subject, teacher: nn.Module, options: NADOptions = None, progress: bool = True,
        **erase_args) -> dict:
    """Neural Attention Distillation (Li et al., ICLR 2021): CE + Σ_l β_l·mean((Q_s − Q_t)²)."""
    options = options or NADOptions()
    return erase(subject, options, "nad", nad_distiller(options), frozen(teacher), progress=progress, **erase_args)


def level_sizes(model: nn.Module, images: torch.Tensor, device) -> list:
    """The (H, W) of each level's map, read from one forward pass of ``images[:1]`` (uint8)."""
    with torch.no_grad(), recording(model, tap_modules(model, LEVELS)) as levels:
        was_training = model.training
        model.eval()
        model(to_unit(images[:1], device))
        model.train(was_training)
    return [tuple(levels[level].shape[-2:]) for level in LEVELS]


def argd_loss(model: nn.Module, images: torch.Tensor, device, seed: int, options: ARGDOptions) -> ARGDLoss:
    """ARGD's loss module for ``model``'s level sizes on ``images``, its embedding initialised from
    ``seed``; its parameters need gradients only when ``options.embed_trainable``."""
    sizes = level_sizes(model, images, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "argd-embedding"))
        vertex_betas = tuple(beta * options.beta_scale for beta in options.vertex_betas)
        loss = ARGDLoss(sizes, vertex_betas, options.edge_weight, options.embed_weight, options.embed_dim, options.p)
    return loss.to(device).requires_grad_(options.embed_trainable)


def argd(subject: Subject, teacher: nn.Module, options: ARGDOptions = None, progress: bool = True,
         **erase_args) -> dict:
    """Attention Relation Graph Distillation (Xia et al., IJCAI 2022): CE + vertex + edge + embedding."""
    options = options or ARGDOptions()
    loss = argd_loss(subject.model, subject.data.train_x, subject.device, subject.seed, options)
    extra = list(loss.parameters()) if options.embed_trainable else []
    return erase(subject, options, "argd", loss, frozen(teacher), extra, progress=progress, **erase_args)
