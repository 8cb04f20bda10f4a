"""Attack registry: ``attacks.build(name, params)`` returns a callable x → x′ (paper TABLE 1).

Adding an attack is one file (a dataclass subclass of :class:`Attack` whose ``param`` fields are
its parameters) and one line in ``REGISTRY``; its flags, run-name part and validation follow.
"""
from dataclasses import fields

from attacks.adaptive_blend import AdaptiveBlend
from attacks.adaptive_patch import AdaptivePatch
from attacks.base import Attack
from attacks.blended import Blended
from attacks.patched import Patched
from attacks.sig import Sig
from attacks.tact import TaCT
from attacks.warped import Warped
from utils.errors import UserError, unknown_name
from utils.params import declared, default_of

REGISTRY = {"patched": Patched, "blended": Blended, "sig": Sig, "warped": Warped,
            # built since the paper to be latent-inseparable by their data (issue 26)
            "adaptive_blend": AdaptiveBlend, "adaptive_patch": AdaptivePatch, "tact": TaCT}
NAMES = tuple(REGISTRY)
PAPER_ATTACKS = ("patched", "blended", "sig", "warped")  # TABLE 1's: the paper's grid


def attack_class(name: str) -> type:
    if name not in REGISTRY:
        raise unknown_name("attack", name, REGISTRY)
    return REGISTRY[name]


def display_name(name: str) -> str:
    """How reports and figures name the attack: its class's ``display``, else its registry name."""
    return attack_class(name).display or name


def param_names(name: str) -> list:
    """The attack's declared parameters (its flags), in order."""
    return [f.name for f in declared(attack_class(name))]


def default_params(name: str) -> dict:
    return {f.name: default_of(f) for f in declared(attack_class(name))}


def build(name: str, params: dict = None, seed: int = 0, grayscale: bool = False, **kwargs) -> Attack:
    """The attack ``name`` with its parameters given as a dict ``params`` or as keywords
    (``build("blended", blend_alpha=0.2)``), defaults for the rest; ``seed`` reaches an attack
    that draws its trigger at random (WaNet's warp field, Adaptive-Blend's pieces), ``grayscale``
    one that makes its trigger grey on a grey dataset."""
    cls = attack_class(name)
    params = {**(params or {}), **kwargs}
    unknown = sorted(set(params) - set(param_names(name)))
    if unknown:
        raise UserError(f"attack '{name}' takes no parameter {', '.join(unknown)}; it takes: "
                        f"{', '.join(param_names(name))}")
    names = {f.name for f in fields(cls)}
    if "seed" in names:
        params["seed"] = seed
    if "grayscale" in names:
        params["grayscale"] = grayscale
    return cls(**params)


__all__ = ["build", "attack_class", "display_name", "param_names", "default_params", "Attack", "NAMES", "REGISTRY"]
