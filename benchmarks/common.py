"""What the benchmarks share: the flags that name the timed model and where it runs, declared once
as parameters (utils.params) with each benchmark choosing its own default, and the one way a
benchmark reads its flags, so that a bad value is one line and exit status 2 (pipeline.cli.run_cli)
as in every entry script, and --help lists each flag with its help.
"""
from dataclasses import dataclass
from typing import Optional

from models import WIDTH_DOMAIN
from utils.params import check_params, param


@dataclass
class BenchmarkOptions:
    """A benchmark's options (subclassed, one dataclass per benchmark): every declared value is
    checked as it is built, so a bad flag is refused before anything is timed."""

    def __post_init__(self):
        check_params(self)


def model_name(choices: tuple = None):
    """--model_name: the architecture a benchmark times (``choices``: the ones it can time)."""
    return param("vgg11", "architecture timed (default: vgg11, the grid's base model)", choices=choices)


def width(default: float):
    """--width: the timed model's channel-width multiplier."""
    return param(default, f"channel-width multiplier of the timed model (default: {default:g}; 1 is the paper's; "
                          f"at most 16)", **WIDTH_DOMAIN)


def device(default: str):
    """--device: where every time is measured, so no rate is divided by one measured elsewhere."""
    return param(default, f"cpu, cuda (cuda:N) or auto; every time is measured on it (default: {default})")


def threads(default: Optional[int] = None, note: str = ""):
    """--threads: CPU results depend on the thread count, so each benchmark states the one it ran on;
    None is torch's own count (:func:`thread_count`)."""
    shown = "torch's" if default is None else default
    return param(default, f"CPU threads (default: {shown}{note})", low=1, type=int)


def thread_count(requested: Optional[int]) -> int:
    """Set torch's CPU threads, and every BLAS and OpenMP pool's (utils.threads), to ``requested``
    (None: keep torch's) and return the count in use."""
    import torch

    from utils.threads import pin_cpu_threads

    if requested is not None:
        pin_cpu_threads(requested)
    return torch.get_num_threads()


def parser(cls, doc: str):
    """A parser of ``cls``'s flags whose errors are one line (pipeline.cli.OneLineParser); its
    description is the first paragraph of ``doc``, the benchmark's docstring."""
    from pipeline.cli import OneLineParser
    from pipeline.flags import add_flags

    return add_flags(OneLineParser(description=doc.split("\n\n")[0]), cls)


def parse(cls, argv, doc: str):
    """``cls`` from the command line ``argv``; a bad value raises ParameterError naming its flag."""
    from pipeline.flags import from_args

    return from_args(cls, parser(cls, doc).parse_args(argv))
