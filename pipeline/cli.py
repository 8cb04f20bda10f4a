"""What every entry script shares: the run flags, and one line on stderr with exit 2 on bad input."""
import argparse
import signal
import sys
import threading
import warnings

import attacks
from pipeline.config import RunConfig
from regularizers import registry as regularizer_registry
from pipeline.flags import add_flags, from_args
from utils.errors import ParameterError, UserError, describe_os_error
from utils.params import declared

RUN_GROUPS = (
    ("data", ("data_name", "data_path", "download", "train_subset")),
    ("model", ("model_name", "width")),
    ("attack (paper §2.2, TABLE 1)", ("attack_name", "target", "poison_ratio", "poison_mode", "cover_ratio",
                                      "poison_batching")),
    ("loss and ML-MMDR regulariser (paper Algorithm 1, Eq. 6)",
     ("ce_reduction", "mlmmdr_lamb", "regularizer", "mlmmdr_layer", "mlmmdr_reduce", "kernel", "mmd_estimator")),
    ("optimisation (paper §3.4; unset = the dataset's default)",
     ("epochs", "batch_size", "lr", "milestones", "momentum", "weight_decay", "augment")),
    ("execution", ("seed", "device", "eval_batch_size", "eval_every", "out_dir", "run_name", "progress",
                   "resume", "overwrite")),
    ("speed (GPU fast path) and several GPUs (torchrun --nproc_per_node K main.py …; --batch_size is the global "
     "batch)", ("amp", "amp_dtype", "channels_last", "compile", "deterministic", "sync_bn", "mmd_sync")),
)


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (an unknown flag, "nan" for an integer) become one line and exit 2
    through :func:`run_cli`, like every other bad input, instead of the usage block."""

    def error(self, message):
        raise UserError(f"{message} (see --help)")


def build_run_parser(description: str) -> argparse.ArgumentParser:
    """The run flags every entry script shares, so the same flags name the same run: the run
    configuration's fields, then each attack's own parameters under its name."""
    parser = OneLineParser(description=description)
    grouped = [name for _, names in RUN_GROUPS for name in names]
    missing = [f.name for f in declared(RunConfig) if f.name not in grouped]
    assert not missing, f"RunConfig fields without a flag group: {missing}"
    for title, names in RUN_GROUPS:
        add_flags(parser, RunConfig, names=names, title=title)
    for name, cls in attacks.REGISTRY.items():
        add_flags(parser, cls, title=f"attack {name}")
    for name, options in regularizer_registry.all_options():
        add_flags(parser, options, title=f"regularizer {name} ({regularizer_registry.entry(name).source})")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """A validated, resolved RunConfig; any bad value raises UserError saying what to do."""
    config = from_args(RunConfig, args)
    if config.attack_name in attacks.NAMES:
        config.attack_params = {key: getattr(args, key) for key in attacks.param_names(config.attack_name)}
    if config.regularizer in regularizer_registry.NAMES:
        config.regularizer_params = {key: getattr(args, key) for key in regularizer_registry.param_names(config.regularizer)}
    return config.validate().resolve_defaults()


def run_cli(main, argv=None) -> int:
    """Call ``main(argv)``; bad input becomes ``error: <what was wrong and what to do>`` on one line
    of stderr and exit status 2 (a parameter is named by its flag); a filesystem error one line and
    exit status 1; Ctrl-C exit status 130 and SIGTERM 143, each with a line."""
    from utils import distributed

    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"
    rank = distributed.launched_rank()
    if rank > 0:  # under torchrun rank 0 alone warns; each rank reports an error of its own
        warnings.simplefilter("ignore")

    def say(line: str, error: BaseException = None) -> None:
        if rank == 0:
            print(line, file=sys.stderr)
        elif not getattr(error, "echo", False):  # rank 0 prints a shared bad-input line once
            print(f"rank {rank}: {line}", file=sys.stderr)

    previous = _on_sigterm_raise()
    try:
        return main(argv) or 0
    except Terminated:
        print("terminated (SIGTERM): the run's lock is released and a training run resumes from its last finished "
              "epoch with --resume", file=sys.stderr)
        return 143
    except ParameterError as error:
        say(f"error: --{error.parameter} {error.problem}", error)
        return 2
    except UserError as error:
        say(f"error: {error}", error)
        return 2
    except OSError as error:  # a full disk, a read-only directory, a file where a directory should be
        say(f"error: {describe_os_error(error)}", error)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM, what Slurm and most schedulers send to stop a job: raised in the main thread so
    that it unwinds like Ctrl-C (locks released, temporary files removed, resume.pt kept). A
    BaseException, so that no ``except Exception`` on the way takes it for a failure."""


def _on_sigterm_raise():
    """Make SIGTERM raise :class:`Terminated`; returns the previous handler (None when this is not
    the main thread, where signal handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)
