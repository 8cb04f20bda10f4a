"""The latent regularisers by name: ``--regularizer mmd|adv_embed|wasserstein`` at ``--mlmmdr_layer``.

Each entry names its method, its source and its own options (a dataclass whose ``param`` fields
become its flags, as an attack's do), and ``create`` builds it from the training settings. Adding
a regulariser is one class of :mod:`regularizers.multilevel`'s ``LatentRegularizer`` form and one
entry here; its flags, run-name part and records follow.

ML-MMDR and SL-MMDR are the ``mmd`` entry at ``all`` and at ``last``; its options are the run's
own --kernel, --mlmmdr_reduce and --mmd_estimator, so runs recorded before the registry keep
their identity.
"""
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from regularizers.adversarial import CLEAN_GROUPS, AdversarialEmbedding
from regularizers.multilevel import MultiLevelMMD
from regularizers.wasserstein import MultiLevelSWD
from utils.errors import UserError, unknown_name
from utils.params import check_params, declared, default_of, param


@dataclass
class AdvEmbedOptions:
    adv_embed_warmup: int = param(10, "adv_embed: epochs of plain poisoned training before the adversarial game "
                                  "(reference: 10, there before its own epochs; here within --epochs)", low=0)
    adv_embed_lr: float = param(1e-3, "adv_embed: the discriminator's Adam learning rate (reference: 1e-3)",
                                low=0.0, low_open=True)
    adv_embed_d_epochs: int = param(100, "adv_embed: discriminator epochs before each classifier epoch, a fresh "
                                    "Adam each time (reference: 100)", low=1)
    adv_embed_clean: str = param("all", "adv_embed: the clean rows the adversarial term reads: all (every clean "
                                 "row of the batch, the reference) or target (the clean target-class rows, "
                                 "Eq. 6's group)", choices=CLEAN_GROUPS)


@dataclass
class SWDOptions:
    wasserstein_projections: int = param(10, "wasserstein: random unit directions per level, drawn anew at every step "
                                 "(10: the number of rows of the classifier WB's ports project on, for 10 "
                                 "classes)", low=1)


@dataclass(frozen=True)
class Entry:
    display: str
    source: str
    options: Optional[type]
    create: Callable  # (model, settings, params) -> LatentRegularizer


def _mmd(model, settings, params):
    return MultiLevelMMD(model, settings.levels, settings.kernel, settings.mlmmdr_reduce, settings.mmd_estimator)


def _adv_embed(model, settings, params):
    return AdversarialEmbedding(model, settings.levels, params["adv_embed_warmup"], params["adv_embed_lr"],
                                params["adv_embed_d_epochs"], params["adv_embed_clean"], settings.batch_size,
                                settings.epochs, settings.seed, settings.mlmmdr_reduce)


def _wasserstein(model, settings, params):
    return MultiLevelSWD(model, settings.levels, settings.mlmmdr_reduce, params["wasserstein_projections"], settings.seed)


REGULARIZERS = {
    "mmd": Entry("MMD", "the paper's Eq. 3 and 6 (ML-MMDR at all, SL-MMDR at last)", None, _mmd),
    "adv_embed": Entry("AdvEmbed", "Tan & Shokri, EuroS&P 2020 [21]: a discriminator against the representation",
                       AdvEmbedOptions, _adv_embed),
    "wasserstein": Entry("SWD", "Doan et al., NeurIPS 2021 [22]: WB's sliced Wasserstein term as a classifier "
                         "regulariser on fixed triggers (not WB's trigger generator)", SWDOptions, _wasserstein),
}
NAMES = tuple(REGULARIZERS)


def entry(name: str) -> Entry:
    if name not in REGULARIZERS:
        raise unknown_name("regularizer", name, REGULARIZERS)
    return REGULARIZERS[name]


def param_names(name: str) -> list:
    options = entry(name).options
    return [] if options is None else [f.name for f in declared(options)]


def default_params(name: str) -> dict:
    options = entry(name).options
    return {} if options is None else {f.name: default_of(f) for f in declared(options)}


def check(name: str, params: dict) -> dict:
    """``params`` as the regulariser's options resolve them; a bad value raises ParameterError
    naming its flag, an unknown one UserError."""
    options = entry(name).options
    unknown = sorted(set(params) - set(param_names(name)))
    if unknown:
        raise UserError(f"regularizer '{name}' takes no parameter {', '.join(unknown)}; it takes: "
                        f"{', '.join(param_names(name)) or 'none'}")
    if options is None:
        return {}
    resolved = options(**{**default_params(name), **params})
    check_params(resolved)
    return asdict(resolved)


def create(name: str, model, settings, params: dict = None):
    """The regulariser ``name`` on ``model``'s taps at ``settings.levels``."""
    return entry(name).create(model, settings, check(name, params or {}))


def all_options() -> list:
    """The options classes of every regulariser that has some (for the command line's flags)."""
    return [(name, item.options) for name, item in REGULARIZERS.items() if item.options is not None]


__all__ = ["REGULARIZERS", "NAMES", "create", "entry", "param_names", "default_params", "check", "all_options"]
