#!/usr/bin/env python
"""Train (and optionally evaluate) every combination of the given values: a grid of main.py runs.

    python experiments/sweep.py --data_name digits --attack_name patched blended \\
        --mlmmdr_lamb 0 0.1 0.3 --seed 0 1 --flags "--width 0.25 --epochs 4" --jobs 2
    python experiments/sweep.py --data_name cifar10 --model_name vgg11 preactresnet18 \\
        --attack_name patched blended sig warped --mlmmdr_lamb 0 0.1 0.2 0.3 --mlmmdr_layer all last \\
        --flags "--data_path data" --executor slurm --slurm_partition gpu --slurm_gpus 1 --jobs 64

Each axis takes one or more values; --flags holds main.py flags shared by every run. RBT (λ = 0)
is one run whatever --mlmmdr_layer lists. Finished runs are skipped and interrupted ones resume, so
the same command can be run again until everything is done.
"""
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import OneLineParser, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402

AXES = {"data_name": str, "model_name": str, "attack_name": str, "mlmmdr_lamb": float, "mlmmdr_layer": str,
        "seed": int}
STAGES = ("train", "evaluate")


def parse(argv):
    from pipeline.executors import add_executor_flags

    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    defaults = {"data_name": ["digits"], "model_name": ["vgg11"], "attack_name": ["patched"], "mlmmdr_lamb": [0.0],
                "mlmmdr_layer": ["all"], "seed": [0]}
    for axis, kind in AXES.items():
        parser.add_argument(f"--{axis}", type=kind, nargs="+", default=defaults[axis],
                            help=f"values of main.py's --{axis} (default: {' '.join(map(str, defaults[axis]))})")
    parser.add_argument("--flags", default="", help="main.py flags every run shares, e.g. \"--width 0.25 --epochs 12\"")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=["train"],
                        help="what each run gets: train, and evaluate (the paper's distances and detections)")
    add_executor_flags(parser)
    return parser.parse_args(argv)


def build_jobs(args) -> list:
    """One Job per distinct run of the grid, each configuration validated before any work starts."""
    from pipeline.cli import build_run_parser, config_from_args
    from pipeline.flags import split_flags
    from pipeline.schedule import Job

    shared = split_flags(args.flags, "flags")
    taken = sorted({flag.lstrip("-").split("=")[0] for flag in shared if flag.startswith("--")} & set(AXES))
    if taken:
        raise UserError(f"--flags sets {', '.join('--' + name for name in taken)}, which is an axis of the sweep; give it "
                   f"as an axis instead")
    jobs, names = [], set()
    for values in itertools.product(*(getattr(args, axis) for axis in AXES)):
        chosen = dict(zip(AXES, values))
        argv = [*shared, "--no_progress"] + [part for axis, value in chosen.items() for part in (f"--{axis}", str(value))]
        config = config_from_args(build_run_parser("sweep").parse_args(argv))
        if config.run_name not in names:  # RBT is one run whatever the level choice
            names.add(config.run_name)
            jobs.append(Job(config, [(stage, None) for stage in args.stages]))
    return jobs


def score(metrics: dict, key: str, job) -> str:
    """A run's BA or ASR for the summary ('nan' before it trained); a value that is not a number is a
    damaged metrics.json, named in one line."""
    value = metrics.get(key, float("nan"))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{job.run.file('metrics')} holds {key} = {value!r}, not a number; delete it and retrain the run")
    return f"{value:.4f}"


def main(argv=None) -> int:
    from pipeline.executors import slurm_options
    from pipeline.schedule import RunsFailed, run_jobs

    args = parse(argv)
    slurm = slurm_options(args)  # checks --jobs, --threads and the Slurm flags before any work
    jobs = build_jobs(args)
    pending = [job for job in jobs if job.pending()]
    print(f"{len(jobs)} runs, {len(pending)} with work to do")  # what it will do, on stdout: stderr is for what went wrong
    failed = None
    try:
        run_jobs(jobs, args.jobs, threads=args.threads, executor=args.executor, slurm=slurm,
                 submitit_dir=args.submitit_dir, keep_going=args.keep_going, retry_failed=args.retry_failed)
    except RunsFailed as error:  # the others ran: summarise them, then end with the failures' line
        failed = error
    if args.executor == "slurm" and len(pending) > len(failed.skipped if failed else ()):
        return 0  # queued; the failures left alone were named on stderr
    for job in jobs:
        name = job.config.run_name
        if failed and name in failed.failures:
            print(f"{name}: FAILED ({failed.failures[name]})")
            continue
        metrics = job.run.read("metrics") or {}
        print(f"{name}: BA={score(metrics, 'ba', job)} ASR={score(metrics, 'asr', job)}")
    if failed:
        raise failed
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
