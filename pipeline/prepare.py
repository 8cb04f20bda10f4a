"""Everything a stage needs before it computes: device, data, attack and model, validated first.

Everything that can fail on bad input (flags, dataset files, device) is checked before any run
directory is created, so bad input never leaves a partial run behind.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import torch

import attacks
import datasets
import models
from attacks.blended import pattern_path
from datasets.base import stratified_subset
from inference import Subject
from pipeline.config import RunConfig
from pipeline.rundir import RunDir
from utils.device import resolve_device
from utils import distributed
from utils.errors import ParameterError, UserError
from utils.io import UnreadableCheckpoint, first_missing, fit_weights, remove_empty_dirs, waiting_lock
from utils.seed import seed_everything


@dataclass
class Prepared:
    config: RunConfig
    device: torch.device
    data: datasets.ImageDataset
    attack: attacks.Attack
    model: torch.nn.Module

    @property
    def subject(self) -> Subject:
        """What the library's analyses take: the model, its data, trigger, target, seed and batch size.
        Analyses run in float32 even for an ``--amp`` run, so its measurements are comparable."""
        config = self.config
        return Subject(self.model, self.data, self.attack, config.target, self.device, config.seed,
                       config.eval_batch_size, poison_ratio=config.poison_ratio, poison_mode=config.poison_mode,
                       cover_ratio=config.cover_ratio)


def load_data(config: RunConfig) -> datasets.ImageDataset:
    """The dataset of ``config``. With ``--download`` every process (each DDP rank, each array task
    of a sweep) takes the data folder's lock in turn: the first downloads, the others find the
    files in place, instead of all writing one folder at once. A download that fails leaves nothing
    behind: the loader removes what it wrote, and this the lock and the folders made for it."""
    if not config.download or config.data_name not in datasets.DOWNLOADABLE:
        return datasets.build(config.data_name, data_path=config.data_path, seed=config.seed)
    folder = Path(config.data_path or "data").expanduser()
    lock = folder / f".{config.data_name}.download.lock"
    created, had_lock = first_missing(folder), lock.exists()
    try:
        with waiting_lock(lock):
            try:
                return datasets.build(config.data_name, data_path=config.data_path, seed=config.seed, download=True)
            except datasets.DownloadFailed:
                if not had_lock:  # removed while held: a process waiting for it takes the file at the path anew
                    lock.unlink(missing_ok=True)
                raise
    except datasets.DownloadFailed:
        remove_empty_dirs(folder, created)
        raise


def configure_cuda(deterministic: bool) -> None:
    """cuDNN's autotuner picks the fastest convolution algorithms, which may differ from run to
    run and use atomics; ``deterministic`` turns it off and requires deterministic kernels, so a run
    and its resumption on one GPU give the same numbers. An op that has none stops the run
    (:func:`nondeterministic_op`) rather than warn: a warning in a log would leave a run recorded as
    deterministic that is not. (The models' 1×1 global average pool is computed by torch as a mean,
    never by adaptive_avg_pool2d's CUDA backward, which has no deterministic kernel.) Set both ways:
    a later stage or run in this process without the flag is not held to it."""
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
    torch.use_deterministic_algorithms(deterministic)


def nondeterministic_op(error: RuntimeError):
    """The one-line UserError for torch's refusal of an op without a deterministic implementation
    under --deterministic, or None for another RuntimeError."""
    text = str(error)
    if "does not have a deterministic implementation" not in text:
        return None
    return UserError(f"--deterministic: {text.split(', but you set')[0].strip()}, so this run cannot be made "
                     f"deterministic on this device; drop --deterministic (the run is then reproducible up to that "
                     f"op's order of sums), or train on the CPU")


def prepare(config: RunConfig) -> Prepared:
    """Device, data, attack and an initialised model for ``config``; raises UserError on bad input."""
    device = resolve_device(config.device)
    context = distributed.current()
    if context.active and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    if device.type == "cuda":
        configure_cuda(config.deterministic)
    seed_everything(config.seed)
    data = load_data(config)
    if not 0 <= config.target < data.num_classes:
        raise ParameterError("target", f"{config.target} is outside {config.data_name}'s classes "
                                       f"0..{data.num_classes - 1}")
    if config.train_subset is not None:
        if config.train_subset < data.num_classes:
            raise ParameterError("train_subset", f"must hold at least one image per class ({data.num_classes} for "
                                                 f"{config.data_name}), got {config.train_subset}")
        keep = stratified_subset(data.train_y, config.train_subset, config.seed)
        left_out = torch.ones(len(data.train_y), dtype=torch.bool)
        left_out[keep] = False
        data.outside_x, data.outside_y = data.train_x[left_out], data.train_y[left_out]
        data.train_x, data.train_y = data.train_x[keep], data.train_y[keep]
    attack = attacks.build(config.attack_name, config.attack_params, config.seed, grayscale=data.grayscale)
    model = models.build(config.model_name, num_classes=data.num_classes, width=config.width).to(device)
    return Prepared(config, device, data, attack, model)


# What makes a trained model what it is: evaluating it under other values would measure another
# attack, target or data split than the one it was trained with.
IDENTITY = ("data_name", "train_subset", "model_name", "width", "attack_name", "attack_params", "target",
            "poison_ratio", "poison_mode", "cover_ratio", "poison_batching", "seed")


def check_identity(config: RunConfig, recorded: dict, where) -> None:
    """Raise ParameterError when a flag contradicts the configuration the run was trained with."""
    if not isinstance(recorded, dict):
        raise UserError(f"{where} records no configuration of a run; retrain the run")
    trained = RunConfig.from_dict(recorded, str(where)).resolve_defaults()

    def comparable(key, value):
        if key == "attack_params" and "blend_pattern" in value:  # one file, however its path is written
            return {**value, "blend_pattern": str(pattern_path(value["blend_pattern"]).resolve())}
        return value

    for key in IDENTITY:
        if comparable(key, getattr(config, key)) != comparable(key, getattr(trained, key)):
            shown = lambda value: value if key != "attack_params" else ", ".join(  # noqa: E731
                f"{k}={v}" for k, v in value.items())
            raise ParameterError(key, f"{shown(getattr(config, key))} contradicts the run in {where}, trained with "
                                      f"{shown(getattr(trained, key))}; drop the flag (the run's own value is used "
                                      f"with --all_runs) or name another run")


def load_trained(config: RunConfig) -> Prepared:
    """``prepare(config)`` with the run's trained weights loaded, in eval mode; the flags must agree
    with the checkpoint's configuration on everything that defines the model (``IDENTITY``)."""
    run = RunDir.of(config)
    checkpoint = run.checkpoint()
    check_identity(config, checkpoint.get("config", {}), run.file("checkpoint"))
    prepared = prepare(config)
    try:
        fit_weights(prepared.model, checkpoint["state_dict"], run.file("checkpoint"),
                    f"--model_name {config.model_name} --width {config.width:g}")
    except UnreadableCheckpoint as error:
        raise UserError(f"{error}; pass the flags the run was trained with") from None
    # the command's execution setting (experiments/reproduce.py passes each run the format it trained in)
    if config.channels_last:
        prepared.model.to(memory_format=torch.channels_last)
    prepared.model.eval()
    return prepared
