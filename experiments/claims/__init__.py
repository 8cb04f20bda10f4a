"""The claims of REPRODUCTION.md, one module each; importing this package registers every one.

A module here declares one :class:`experiments.claim.Claim` and registers it: adding a claim is
adding a file (docs/ARCHITECTURE.md, "A claim"). The modules are found by listing this package,
so none is named anywhere else. Import ``judge_all``, ``claim_figures`` and ``registered`` from here:
this import is what registers them.
"""
import importlib
import pkgutil

from experiments.claim import claim_figures, judge_all, registered

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["judge_all", "claim_figures", "registered"]
