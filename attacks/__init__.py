"""Attack registry: ``attacks.build(name, **params)`` returns a callable x → x′ (paper TABLE 1)."""
from dataclasses import fields

from attacks.base import Attack
from attacks.blended import Blended
from attacks.patched import Patched
from attacks.sig import Sig
from attacks.warped import Warped
from utils.errors import UserError, unknown_name

REGISTRY = {"patched": Patched, "blended": Blended, "sig": Sig, "warped": Warped}
NAMES = tuple(REGISTRY)


def param_names(name: str) -> list:
    if name not in REGISTRY:
        raise unknown_name("attack", name, REGISTRY)
    return [f.name for f in fields(REGISTRY[name])]


def build(name: str, **params) -> Attack:
    accepted = param_names(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UserError(f"attack '{name}' takes no parameter {', '.join(unknown)}; it takes: "
                        f"{', '.join(accepted)}")
    return REGISTRY[name](**params)


def build_from_config(name: str, config) -> Attack:
    """Build ``name`` taking its parameters from same-named attributes of a config object."""
    return build(name, **{key: getattr(config, key) for key in param_names(name) if hasattr(config, key)})


__all__ = ["build", "build_from_config", "param_names", "Attack", "NAMES"]
