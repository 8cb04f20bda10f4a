"""Parameters declared once: a dataclass field carries its help text and its domain.

``param(default, help, low=0, ...)`` is a dataclass field whose metadata the command-line layer
turns into a flag (pipeline/flags.py) and :func:`check_params` turns into validation, so an
attack's or a defense's parameter is written in one place: its dataclass.
"""
from dataclasses import MISSING, field, fields


def param(default, help: str, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
          choices=None, flag: str = None, nargs: str = None, type=None):
    """A declared parameter. ``low``/``high`` bound it (``*_open`` excludes the bound; every element
    of a tuple is checked); ``choices`` lists its values; ``flag`` overrides the flag's name (a
    bool that defaults to True gets ``--no_<name>``); ``type`` is needed only when the default is
    None."""
    metadata = {"help": help, "low": low, "high": high, "low_open": low_open, "high_open": high_open,
                "choices": choices, "flag": flag, "nargs": nargs, "type": type}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def declared(cls_or_obj) -> list:
    """The fields declared with :func:`param`, in order."""
    return [f for f in fields(cls_or_obj) if "help" in f.metadata]


def default_of(f):
    return f.default_factory() if f.default is MISSING else f.default


def domain(meta) -> str:
    """'in (0, 1]', 'at least 1', '≥ 0', 'one of a, b' — how a bound reads in an error message."""
    low, high = meta.get("low"), meta.get("high")
    number = lambda value: str(value) if isinstance(value, int) else f"{value:g}"  # noqa: E731
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    if low is not None and high is not None:
        return f"in {'(' if meta['low_open'] else '['}{number(low)}, {number(high)}{')' if meta['high_open'] else ']'}"
    if low is not None:
        if meta["low_open"]:
            return "positive" if low == 0 else f"> {number(low)}"
        return f"at least {low}" if isinstance(low, int) and low != 0 else f"≥ {number(low)}"
    if high is not None:
        return f"{'<' if meta['high_open'] else '≤'} {number(high)}"
    return ""


def _inside(value, meta) -> bool:
    if meta.get("choices") and value not in meta["choices"]:
        return False
    low, high = meta.get("low"), meta.get("high")
    if low is not None and not (value > low if meta["low_open"] else value >= low):
        return False
    if high is not None and not (value < high if meta["high_open"] else value <= high):
        return False
    return True


def check_params(obj) -> None:
    """Raise ParameterError naming the first declared field of ``obj`` outside its domain.
    None is allowed (it means "the default"); NaN and ±inf never are: every declared number is
    finite, so a typo cannot train a diverging model that still reports a result."""
    import math

    from utils.errors import ParameterError

    for f in declared(obj):
        value = getattr(obj, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if item is None or isinstance(item, (str, bool)) and not f.metadata.get("choices"):
                continue
            if isinstance(item, float) and not math.isfinite(item):
                raise ParameterError(f.name, f"must be a finite number, got {item}")
            if not _inside(item, f.metadata):
                shown = value if len(values) == 1 else list(values)
                raise ParameterError(f.name, f"must be {domain(f.metadata)}, got {shown}")
