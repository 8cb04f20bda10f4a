"""Erasing a backdoor from a trained model with a little clean data: fine-tuning, NAD and ARGD.

The defender holds a seeded share of the clean training set (5%, as the NAD and ARGD code's
``--ratio 0.05``; never a poisoned copy) and trains the backdoored model on it with random crop
(pad 4), horizontal flip and Cutout with one hole of length 3 (the NAD code's augmentation):

- fine-tuning: cross-entropy only, all layers. NAD's README obtains its teacher this way ("finetuning
  all layers of the backdoored model using 5% clean data with data augmentation", 5-10 epochs, its
  training code with every β = 0); we run 10 epochs at the constant learning rate 0.01, the rate the
  NAD schedule settles at after its two warm epochs at 0.1, which would shake a model trained on a
  few hundred images hard. The result is also the teacher of NAD and ARGD.
- NAD: cross-entropy + Σ_l β_l·attention_loss against the frozen fine-tuned teacher
  (defenses/distillation.py), SGD (momentum 0.9, weight decay 1e-4, Nesterov), batch 64, lr 0.1 for
  2 epochs then 0.01, 20 epochs: the NAD code's config.py and adjust_learning_rate.
- ARGD: cross-entropy + the attention relation graph loss, 10 epochs, the optimiser of NAD.

Each defense returns BA and ASR before, after and per epoch; the model is changed in place.
"""
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from datasets.augment import cutout, random_crop_flip
from defenses.distillation import LEVELS, ARGDLoss, nad_loss
from defenses.neural_cleanse import clean_index
from inference import Subject, recording, to_unit
from models import tap_modules
from utils.errors import UserError
from utils.params import check_params, param
from utils.seed import derive_seed, generator


@dataclass
class ErasingOptions:
    """What every erasing defense shares; ``--defense_ratio``, ``--defense_batch_size`` and
    ``--no_defense_augment`` are one flag each for all of them. The optimiser's momentum, weight decay
    and Nesterov term are the NAD code's and not flags."""

    defense_ratio: float = param(0.05, "share of the clean training set the defender holds, a seeded sample "
                                 "(NAD/ARGD: 0.05)", low=0.0, high=1.0, low_open=True, flag="--defense_ratio")
    defense_batch_size: int = param(64, "the defender's batch size (NAD/ARGD: 64)", low=1,
                                    flag="--defense_batch_size")
    defense_augment: bool = param(True, "train the defender's data without random crop (pad 4), flip and "
                                  "Cutout(1 hole, length 3) (the NAD code's augmentation)",
                                  flag="--no_defense_augment")
    epochs: int = param(10, "epochs", low=1)
    lr: float = param(0.01, "SGD learning rate", low=0.0, low_open=True)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = True

    def __post_init__(self):
        check_params(self)

    def lr_at(self, epoch: int) -> float:
        return self.lr

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


@dataclass
class FinetuneOptions(ErasingOptions):
    """Fine-tuning: each field is a defend.py flag ``--ft_<name>``."""

    epochs: int = param(10, "epochs (NAD's README: 5-10)", low=1)
    lr: float = param(0.01, "SGD learning rate, constant (the rate of NAD's schedule after its warm epochs)",
                      low=0.0, low_open=True)


@dataclass
class DistillationOptions(ErasingOptions):
    """What NAD and ARGD add: a teacher and a step-down learning rate (the NAD code's schedule)."""

    teacher: str = param("", "teacher checkpoint of the run's architecture (default: the run's fine-tuned model, "
                         "defense finetune at the same --defense_ratio, run first when missing)", flag="--teacher")
    teacher_epochs: int = param(10, "epochs of that fine-tuning when it runs first (NAD's README: 5-10)", low=1,
                                flag="--teacher_epochs")
    epochs: int = param(20, "epochs", low=1)
    lr: float = param(0.1, "SGD learning rate of the first epochs (NAD: 0.1). With a few dozen clean images, "
                      "e.g. digits' 71, two steps per epoch at 0.1 wreck the model: use 0.01 there",
                      low=0.0, low_open=True)
    lr_epochs: int = param(2, "epochs at the first learning rate (NAD: 2)", low=0)
    lr_after: float = param(0.01, "SGD learning rate after them (NAD: 0.01)", low=0.0, low_open=True)
    p: float = param(2.0, "power p of the attention map Σ_c |f_c|^p (NAD: 2)", low=0.0, low_open=True)

    def lr_at(self, epoch: int) -> float:
        return self.lr if epoch < self.lr_epochs else self.lr_after


@dataclass
class NADOptions(DistillationOptions):
    """NAD (the NAD code's config.py): each field is a defend.py flag ``--nad_<name>``."""

    epochs: int = param(20, "epochs (NAD: 20)", low=1)
    betas: tuple = param((500.0, 1000.0, 1000.0), "attention-loss weights β of s1 s2 s3 (NAD: 500 1000 1000)",
                         low=0.0, nargs=3, type=float)


@dataclass
class ARGDOptions(DistillationOptions):
    """ARGD (the ARGD code's riman_distance.py): each field is a defend.py flag ``--argd_<name>``."""

    epochs: int = param(10, "epochs (ARGD: 10)", low=1)
    vertex_betas: tuple = param((2000.0, 5000.0, 2000.0), "vertex (attention-loss) weights of s1 s2 s3 "
                                "(ARGD: 2000 5000 2000)", low=0.0, nargs=3, type=float)
    edge_weight: float = param(1.0, "weight of the edge loss (ARGD: 1)", low=0.0)
    embed_weight: float = param(1.0, "weight of the embedding (cross-level attention) loss (ARGD: 1)", low=0.0)
    embed_dim: int = param(128, "query/key dimension of the embedding loss (ARGD: 128)", low=1)
    embed_trainable: bool = param(False, "optimise the embedding module's parameters with the student, as "
                                  "Show, Attend and Distill does (the ARGD code leaves them at their seeded "
                                  "random initialisation)")


def defender_data(train_x: torch.Tensor, train_y: torch.Tensor, ratio: float, seed: int) -> tuple:
    """(images, labels): a seeded ``ratio`` of the clean training set, int(ratio·N) images as the NAD
    code's random_split, at least one, in dataset order."""
    index = clean_index(len(train_x), max(1, int(ratio * len(train_x))), seed)
    return train_x[index], train_y[index]


def _batches(count: int, batch_size: int, rng: torch.Generator) -> list:
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
        for index in _batches(len(self.images), self.options.defense_batch_size, self.rng):
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


def erase(subject: Subject, options: ErasingOptions, name: str, distill=None, teacher: nn.Module = None,
          extra_parameters=(), progress: bool = True) -> dict:
    """Run an :class:`Eraser` on the defender's data for ``options.epochs``, measuring BA and ASR
    before and after each epoch. Returns {defense, clean_samples, options, before, after, history
    (one row per epoch, epoch 0 = before), seconds}."""
    images, labels = defender_data(subject.data.train_x, subject.data.train_y, options.defense_ratio, subject.seed)
    eraser = Eraser(subject.model, images, labels, options, subject.device, generator(subject.seed, f"erase-{name}"),
                    distill, teacher, extra_parameters)
    started = time.perf_counter()
    before = subject.ba_asr()
    history = [{"epoch": 0, "lr": None, **before, "seconds": 0.0}]
    for epoch in tqdm(range(options.epochs), desc=name, disable=not progress, dynamic_ncols=True):
        epoch_started = time.perf_counter()
        means = eraser.train_epoch(epoch)
        if not all(math.isfinite(value) for value in means.values()):
            raise UserError(f"{name} diverged at epoch {epoch + 1} ({', '.join(f'{k}={v:.4g}' for k, v in means.items())}); "
                            f"lower its learning rate (lr={options.lr_at(epoch):g})")
        history.append({"epoch": epoch + 1, "lr": options.lr_at(epoch), **means, **subject.ba_asr(),
                        "seconds": round(time.perf_counter() - epoch_started, 3)})
    subject.model.eval()
    after = {"ba": history[-1]["ba"], "asr": history[-1]["asr"]}
    return {"defense": name, "clean_samples": len(images), "options": options.to_dict(), "before": before,
            "after": after, "history": history, "seconds": round(time.perf_counter() - started, 3)}


def frozen(teacher: nn.Module) -> nn.Module:
    """The teacher in eval mode (its BatchNorm statistics fixed) with no gradients."""
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def finetune(subject: Subject, options: FinetuneOptions = None, progress: bool = True) -> dict:
    """Fine-tuning all layers with cross-entropy on the defender's clean data."""
    return erase(subject, options or FinetuneOptions(), "finetune", progress=progress)


def nad_distiller(options: NADOptions):
    """NAD's distillation term as ``(student_levels, teacher_levels) -> (loss, terms)``."""
    betas = dict(zip(LEVELS, options.betas))
    return lambda student, teacher: nad_loss(student, teacher, betas, options.p)


def nad(subject: Subject, teacher: nn.Module, options: NADOptions = None, progress: bool = True) -> dict:
    """Neural Attention Distillation (Li et al., ICLR 2021): CE + Σ_l β_l·mean((Q_s − Q_t)²)."""
    options = options or NADOptions()
    return erase(subject, options, "nad", nad_distiller(options), frozen(teacher), progress=progress)


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
        loss = ARGDLoss(sizes, options.vertex_betas, options.edge_weight, options.embed_weight, options.embed_dim,
                        options.p)
    return loss.to(device).requires_grad_(options.embed_trainable)


def argd(subject: Subject, teacher: nn.Module, options: ARGDOptions = None, progress: bool = True) -> dict:
    """Attention Relation Graph Distillation (Xia et al., IJCAI 2022): CE + vertex + edge + embedding."""
    options = options or ARGDOptions()
    loss = argd_loss(subject.model, subject.data.train_x, subject.device, subject.seed, options)
    extra = list(loss.parameters()) if options.embed_trainable else []
    return erase(subject, options, "argd", loss, frozen(teacher), extra, progress=progress)
