"""Adversarial embedding (Tan & Shokri, EuroS&P 2020, the paper's reduction method [21]).

A discriminator D learns to tell a poisoned input's representation from a clean one's; the
classifier is trained on its own loss minus λ times D's cross-entropy, so that its representations
of the two become ones D cannot tell apart:

    L = CE(f(x), y) − λ · CE(D(z(x)), p),    p = 1 for a poisoned input, 0 for a clean one.

No code of the authors survives. What this follows is the one implementation that plays the
min–max game (trojanzoo's ``bypass_embed.py``, last at commit 389c56c):

- D: Linear(d, 256), BatchNorm, LeakyReLU, Linear(256, 128), BatchNorm, ReLU, Linear(128, 2), on
  the flattened features of a level;
- D's training set: the images the attack poisons, clean (p = 0) and triggered (p = 1);
- schedule: ``warmup`` epochs of plain poisoned training; then before every epoch D trains for
  ``d_epochs`` epochs with a fresh Adam (lr ``lr``) on that set's features, taken once from the
  model in evaluation mode; then one classifier epoch with D fixed (in evaluation mode);
- the adversarial term reads every clean and every poisoned row of the batch (``clean="all"``).

ART's port trains model and discriminator with one optimiser (D's weights also ascend its own
loss): no adversarial game, so not followed. Its multi-level form here has one discriminator per
level, the terms averaged over levels as Eq. 6 averages MMD²: one discriminator on the
concatenated levels would be dominated by the widest level (s1), and per-level terms keep the
comparison with ML-MMDR to the distance alone.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from regularizers.multilevel import LatentRegularizer
from utils.distributed import SINGLE, Context
from utils.errors import UserError
from utils.seed import derive_seed, generator

CLEAN_GROUPS = ("all", "target")


def discriminator(in_features: int) -> nn.Sequential:
    """Tan & Shokri's discriminator as trojanzoo builds it: 256 and 128 hidden units, two classes."""
    return nn.Sequential(nn.Linear(in_features, 256), nn.BatchNorm1d(256), nn.LeakyReLU(),
                         nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 2))


def adversarial_term(discriminator_: nn.Module, features: torch.Tensor, poisoned: torch.Tensor) -> torch.Tensor:
    """−CE(D(z), p): the term the classifier minimises (its gradient moves z where D errs)."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        logits = discriminator_(features.flatten(1).float())
        return -F.cross_entropy(logits, poisoned.long())


def train_discriminator(discriminator_: nn.Module, features: torch.Tensor, poisoned: torch.Tensor, epochs: int,
                        lr: float, batch_size: int, generator_: torch.Generator) -> float:
    """``epochs`` epochs of a fresh Adam on (features, poisoned), shuffled by ``generator_``;
    returns the accuracy of the last epoch's batches (a batch of one row, which BatchNorm cannot
    normalise, is skipped)."""
    optimizer = torch.optim.Adam(discriminator_.parameters(), lr=lr)
    discriminator_.train()
    correct = seen = 0
    for _ in range(epochs):
        correct = seen = 0
        order = torch.randperm(len(features), generator=generator_).to(features.device)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            if len(rows) < 2:
                continue
            logits = discriminator_(features[rows])
            loss = F.cross_entropy(logits, poisoned[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += int((logits.argmax(1) == poisoned[rows]).sum())
            seen += len(rows)
    discriminator_.eval()
    return correct / max(seen, 1)


class AdversarialEmbedding(LatentRegularizer):
    """Tan & Shokri's adversarial term at each level (see the module's docstring)."""

    name = "adv_embed"
    display = "AdvEmbed"
    term = "adv"
    supports_ddp = False

    def __init__(self, model: nn.Module, levels=("s3",), warmup: int = 10, lr: float = 1e-3, d_epochs: int = 100,
                 clean: str = "all", batch_size: int = 256, epochs: int = None, seed: int = 0,
                 reduce: str = "mean"):
        if clean not in CLEAN_GROUPS:
            raise UserError(f"unknown clean group '{clean}'; choose one of {', '.join(CLEAN_GROUPS)}")
        if epochs is not None and warmup >= epochs:
            raise UserError(f"--adv_embed_warmup {warmup} leaves none of the {epochs} epochs to the adversarial "
                            f"game; lower it below --epochs")
        super().__init__(model, levels, reduce)
        self.model, self.warmup, self.lr, self.d_epochs = model, warmup, lr, d_epochs
        self.clean, self.batch_size, self.seed = clean, batch_size, seed
        self.discriminators = {}
        self.active = False  # whether this epoch is past the warm-up
        self.accuracy = {}  # {level: D's accuracy in its last training epoch}

    def benign_mask(self, batch, target: int) -> torch.Tensor:
        if self.clean == "target":
            return batch.benign_target_mask(target)
        mask = ~batch.poisoned & ~batch.noise
        return mask if batch.cover is None else mask & ~batch.cover

    def start_epoch(self, trainer, epoch: int) -> None:
        """Past the warm-up, train each level's D on the features of the attack's poisoned images,
        clean and triggered, from the model in evaluation mode (computed once: the model does not
        change while D trains, so this equals recomputing them at every D epoch)."""
        self.active = epoch >= self.warmup
        if not self.active:
            return
        features, poisoned = self.discriminator_set(trainer)
        shuffle = generator(self.seed, f"adv-embed-epoch-{epoch}", device=poisoned.device)
        for level in self.levels:
            level_features = features[level]
            model_d = self._discriminator(level, level_features.shape[1], level_features.device)
            model_d.requires_grad_(True)
            self.accuracy[level] = train_discriminator(model_d, level_features, poisoned, self.d_epochs, self.lr,
                                                       self.batch_size, shuffle)
            model_d.requires_grad_(False)  # fixed during the classifier's epoch: its gradients are not needed

    def discriminator_set(self, trainer):
        """({level: flattened float32 features}, p) of the poisoned images clean and triggered."""
        data = trainer.data
        index = data.poison_index
        if len(index) < 1:
            raise UserError("adversarial embedding needs poisoned images to train its discriminator; raise "
                            "--poison_ratio")
        clean = data.images.index_select(0, index.to(data.device)).float().div_(255.0)
        triggered = data.attack.train_trigger(clean, "poisoned", torch.arange(len(index)), len(index))
        images = torch.cat([clean, triggered])
        poisoned = torch.cat([torch.zeros(len(index)), torch.ones(len(index))]).long().to(data.device)
        was_training = self.model.training
        self.model.eval()
        chunks = {level: [] for level in self.levels}
        try:
            with torch.no_grad():
                for start in range(0, len(images), trainer.config.eval_batch_size):
                    self.model(images[start:start + trainer.config.eval_batch_size].to(trainer.device))
                    for level, value in self.taps.take().items():
                        chunks[level].append(value.flatten(1).float())
                    self.taps.clear()
        finally:
            self.taps.clear()
            self.model.train(was_training)
        return {level: torch.cat(parts) for level, parts in chunks.items()}, poisoned.to(trainer.device)

    def _discriminator(self, level: str, in_features: int, device) -> nn.Module:
        if level not in self.discriminators:
            with torch.random.fork_rng(devices=[]):  # its initial weights come from the run's seed alone
                torch.manual_seed(derive_seed(self.seed, f"adv-embed-discriminator-{level}"))
                self.discriminators[level] = discriminator(in_features)
        return self.discriminators[level].to(device)

    def loss(self, benign_mask: torch.Tensor, poisoned_mask: torch.Tensor, context: Context = SINGLE):
        """(−mean over levels of D's cross-entropy on the batch's clean and poisoned rows,
        {level: that cross-entropy}); zero in the warm-up or without a poisoned row."""
        if context.active:
            raise UserError("adversarial embedding does not run under torchrun: its discriminators train on one "
                            "process; run it in one process")
        try:
            features = self.taps.take()
            poisoned_mask = torch.as_tensor(poisoned_mask)
            rows = (torch.as_tensor(benign_mask) | poisoned_mask).nonzero().flatten()
            self.last_active = self.active and bool(poisoned_mask.any()) and bool(torch.as_tensor(benign_mask).any())
            if not self.last_active:
                per_level = {level: feats.new_zeros((), dtype=torch.float32) for level, feats in features.items()}
                return features[self.levels[0]].new_zeros((), dtype=torch.float32), per_level
            labels = poisoned_mask[rows]
            per_level = {}
            for level, feats in features.items():
                device_rows = rows.to(feats.device, non_blocking=True)
                per_level[level] = -adversarial_term(self.discriminators[level], feats.index_select(0, device_rows),
                                                     labels.to(feats.device, non_blocking=True))
            return -self.reduced(per_level), per_level
        finally:
            self.taps.clear()

    def state_dict(self) -> dict:
        return {"discriminators": {level: {key: value.detach().cpu() for key, value in model_d.state_dict().items()}
                                   for level, model_d in self.discriminators.items()}}

    def load_state_dict(self, state: dict) -> None:
        for level, weights in state.get("discriminators", {}).items():
            model_d = self._discriminator(level, weights["0.weight"].shape[1], weights["0.weight"].device)
            model_d.load_state_dict(weights)
            model_d.requires_grad_(False)
            model_d.eval()
