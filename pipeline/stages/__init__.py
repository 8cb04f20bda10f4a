"""Every stage a run goes through, registered by name in ``STAGES`` (see registry.py):

    train ─┬─ evaluate ──────────── (group) sweep, detection
           ├─ nc ─── nc_triggers ── (group) nc_norms
           ├─ prune ─ prune_curve ─ (group) prune_curves
           └─ features

Importing this package registers them all.
"""
from pipeline.stages import defend, evaluate, figures, train  # noqa: F401  (registration)
from pipeline.stages.registry import STAGES, Stage, get, output_of, register, require, run_group_stage, run_stage

__all__ = ["STAGES", "Stage", "get", "output_of", "register", "require", "run_stage", "run_group_stage"]
