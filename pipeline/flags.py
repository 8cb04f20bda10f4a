"""Command-line flags generated from declared parameters (utils.params), and the way back.

One helper serves the run configuration, every attack, EvalOptions, NCOptions and PruneOptions:
the field's help text, type, bounds and choices become the flag, and a ParameterError raised while
building the dataclass is reworded to name the flag.
"""
import argparse
import re
import shlex

from utils.errors import ParameterError
from utils.params import declared, default_of


def flag_name(f, prefix: str = "") -> str:
    """``--<prefix><name>``, ``--no_<name>`` for a bool that defaults to True, or the declared flag."""
    if f.metadata.get("flag"):
        return f.metadata["flag"]
    if isinstance(default_of(f), bool) and default_of(f):
        return f"--no_{prefix}{f.name}"
    return f"--{prefix}{f.name}"


def dest(f, prefix: str = "") -> str:
    """Where argparse stores the field: unprefixed for a field that declares its own flag, since that
    flag is one name shared by every options class that declares it (e.g. --defense_ratio)."""
    return f.name if f.metadata.get("flag") else f"{prefix}{f.name}"


def _help(f) -> str:
    """The field's help for argparse, which formats it with %: a lone % (as in "1%") is escaped,
    so a help text reads the same in the code and in --help ("%%" is kept as it is)."""
    text = re.sub(r"(?<!%)%(?!%)", "%%", f.metadata["help"])
    choices = f.metadata.get("choices")
    return f"{text} (one of: {', '.join(map(str, choices))})" if choices and "one of" not in text else text


def add_flags(parser, cls, prefix: str = "", names=None, title: str = None):
    """Add a flag for each declared field of ``cls`` (only ``names`` when given), in a group
    ``title``. A field that declares its own flag (``--defense_ratio``) is one flag shared by every
    class that declares it: it is added once per parser, where it first appears."""
    group = parser.add_argument_group(title) if title else parser
    shared = parser.__dict__.setdefault("_shared_flags", set())
    for f in declared(cls):
        if names is not None and f.name not in names:
            continue
        if f.metadata.get("flag"):
            if f.metadata["flag"] in shared:
                continue
            shared.add(f.metadata["flag"])
        default = default_of(f)
        kwargs = {"dest": dest(f, prefix), "help": _help(f)}
        if isinstance(default, bool):
            kwargs.update(action="store_false" if default else "store_true")
        else:
            nargs = f.metadata.get("nargs")
            sample = default[0] if isinstance(default, (list, tuple)) and default else default
            kind = f.metadata.get("type") or type(sample)
            kwargs.update(default=list(default) if isinstance(default, (list, tuple)) else default, type=kind)
            if nargs:
                kwargs["nargs"] = nargs
            choices = f.metadata.get("choices")
            kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}" if choices else f.name.upper()
        group.add_argument(flag_name(f, prefix), **kwargs)
    return parser


def flag_of(cls, parameter: str, prefix: str = "") -> str:
    """The flag (without the dashes) that sets ``cls``'s field ``parameter``."""
    for f in declared(cls):
        if f.name == parameter:
            return flag_name(f, prefix).lstrip("-")
    return parameter


def from_args(cls, args: argparse.Namespace, prefix: str = "", **extra):
    """``cls`` built from the parsed flags; a bad value raises ParameterError naming its flag."""
    values = {f.name: getattr(args, dest(f, prefix)) for f in declared(cls) if hasattr(args, dest(f, prefix))}
    try:
        return cls(**values, **extra)
    except ParameterError as error:
        raise error.renamed(flag_of(cls, error.parameter, prefix)) from None


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def split_flags(text: str, source: str) -> list:
    """``text`` (the value of the flag ``source``, itself a line of flags) split as a shell would;
    an unclosed quote is a ParameterError naming ``source``, not a traceback."""
    try:
        return shlex.split(text)
    except ValueError as error:
        raise ParameterError(source, f"cannot be split into flags ({error}): check its quotes, got {text!r}") from None


def parse_flags(cls, argv: list, prefix: str = "", source: str = "flags"):
    """``cls`` from a list of its own flags, e.g. the reproduction's ``--nc_flags`` string; a flag
    that is not one of ``cls``'s, or a bad value, raises ParameterError naming ``source``."""
    return parse_flag_groups({"": (cls, prefix)}, argv, source)[""]


def parse_flag_groups(groups: dict, argv: list, source: str = "flags") -> dict:
    """{name: options} for ``groups`` {name: (options class, flag prefix)} from one list of their
    flags; a flag declared by several classes (its own ``flag``, e.g. --defense_ratio) sets them all."""
    parser = _RaisingParser(prog=source, add_help=False)
    for cls, prefix in groups.values():
        add_flags(parser, cls, prefix)
    known = list(dict.fromkeys(flag_name(f, prefix) for cls, prefix in groups.values() for f in declared(cls)))
    try:
        args = parser.parse_args(argv)
    except ValueError as error:
        raise ParameterError(source, f"cannot use {' '.join(argv)!r} ({error}); it takes: {', '.join(known)}") from None
    try:
        return {name: from_args(cls, args, prefix) for name, (cls, prefix) in groups.items()}
    except ParameterError as error:
        raise ParameterError(source, f"has --{error.parameter} {error.problem}") from None


def add_detector_flags(parser) -> None:
    """Each registered detector's own parameters as ``--<name>_<field>`` (defenses.DETECTORS)."""
    from defenses import DETECTORS

    for name, detector in DETECTORS.items():
        if detector.options is not None:
            add_flags(parser, detector.options, prefix=f"{name}_", title=f"{detector.display} ({detector.source})")


def eval_options_from_args(cls, args: argparse.Namespace):
    """The evaluation options ``cls`` (EvalOptions) from parsed flags, with the options of every
    detector it runs (its ``--detectors``, or all) gathered from their prefixed flags."""
    from dataclasses import asdict

    from defenses import DETECTORS

    chosen = getattr(args, "detectors", None) or list(DETECTORS)
    options = {name: asdict(from_args(DETECTORS[name].options, args, f"{name}_"))
               for name in chosen if name in DETECTORS and DETECTORS[name].options is not None}
    return from_args(cls, args, detector_options=options)


def parse_eval_flags(cls, argv: list, source: str = "eval_flags"):
    """``cls`` (EvalOptions) from a list of evaluate.py's protocol and detector flags (the
    reproduction's ``--eval_flags``); a bad flag raises ParameterError naming ``source``."""
    parser = _RaisingParser(prog=source, add_help=False)
    add_flags(parser, cls)
    add_detector_flags(parser)
    try:
        args = parser.parse_args(argv)
    except ValueError as error:
        raise ParameterError(source, f"cannot use {' '.join(argv)!r} ({error}); see evaluate.py --help for the "
                                     f"flags it takes") from None
    try:
        return eval_options_from_args(cls, args)
    except ParameterError as error:
        raise ParameterError(source, f"has --{error.parameter} {error.problem}") from None


__all__ = ["add_flags", "from_args", "parse_flags", "parse_flag_groups", "flag_name", "flag_of", "add_detector_flags",
           "eval_options_from_args", "parse_eval_flags"]
