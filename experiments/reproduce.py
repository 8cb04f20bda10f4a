#!/usr/bin/env python
"""Reproduce the paper's claims at CPU scale: train, evaluate, defend, draw, and write one report.

    python experiments/reproduce.py --jobs 2 --threads 1
    python experiments/reproduce.py --profile quick --jobs 2 --threads 1

The defaults are the committed REPRODUCTION.md's grid (Fashion-MNIST, a 10,000-image training subset,
12 epochs with lr ÷10 at 6 and 8, VGG-11 at width 0.25; experiments/grid.py lists its studies), on
seeds 0–4 (issue 45) but the kernel study's 0 1 2: the λ sweep (4 attacks × RBT, SL-MMDR and ML-MMDR
at λ = 0.1 0.2 0.3, the largest λ on every seed), PreActResNet-18 at width 0.125 on patched and
blended, the ten TABLE 3 kernels, the split against the pooled loss (seed 0), Neural Cleanse, pruning and its diagnostic on
the patched RBT and ML-MMDR runs, fine-tuning, NAD and ARGD on the patched RBT and ML-MMDR (λ = 0.3)
runs in two arms, Adaptive-Blend, Adaptive-Patch and TaCT at 10% and at their reference rates
(the first two also stacked with ML-MMDR), and the reduction methods at the last level and at every
level (C12, C13). `--plan` prints what is left and its estimated hours. It then times a training step of each architecture at
full width for the "At the paper's scale" section, draws the figures and writes --report. Each
run's stages run together, the erasing tuned on another run last. Finished stages are skipped and an
interrupted training resumes from its last epoch; the default --out_dir, results/reproduce, is the
committed results archive (JSON records, no checkpoints), so a grid continued on another machine
retrains only the runs that still miss a stage; --jobs N runs N runs at once (submitit local jobs), --executor slurm
submits one Slurm array task per run (see pipeline/executors.py). A report is written only from a
runs directory holding finished stages of the grid, and never over one that records more finished
stages, unless --force.
"""
import json
import platform
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.options import BUDGET_CORES, BUDGET_HOURS, PROFILES  # noqa: E402
from pipeline.cli import OneLineParser, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_parser():
    """reproduce.py's flags: its options, declared in experiments/options.py, then where the runs
    execute (pipeline.executors)."""
    from experiments.options import ReproduceOptions
    from pipeline.executors import add_executor_flags
    from pipeline.flags import add_flags

    parser = add_flags(OneLineParser(description=__doc__.split("\n\n")[0]), ReproduceOptions)
    add_executor_flags(parser)
    return parser


def parse(argv):
    """The parsed flags, each option checked against its declared domain: a bad one raises
    ParameterError naming its flag. A profile sets the defaults; a flag given explicitly wins."""
    from experiments.options import ReproduceOptions
    from pipeline.flags import from_args

    parser = build_parser()
    profile = from_args(ReproduceOptions, parser.parse_known_args(argv)[0]).profile  # one of PROFILES
    parser.set_defaults(**PROFILES[profile])
    args = parser.parse_args(argv)
    from_args(ReproduceOptions, args)
    return args


def build_grid(args):
    from defenses import ARGDOptions, FinetuneOptions, NADOptions, NCOptions
    from defenses.erasing.tuning import TuneOptions
    from evaluation.protocol import EvalOptions
    from experiments.grid import Grid
    from pipeline.config import RunConfig
    from pipeline.flags import parse_eval_flags, parse_flag_groups, parse_flags, split_flags
    from pipeline.stages.figures import ScatterOptions

    base = RunConfig(data_name=args.data_name, data_path=None if args.data_name == "digits" else args.data_path,
                     model_name=args.model_name, width=args.width, epochs=args.epochs, seed=args.seed,
                     out_dir=args.out_dir, eval_every=args.eval_every, train_subset=args.train_subset or None,
                     milestones=args.milestones, progress=False, channels_last=args.channels_last)
    options = {"evaluate": parse_eval_flags(EvalOptions, split_flags(args.eval_flags, "eval_flags")),
               "nc": parse_flags(NCOptions, split_flags(args.nc_flags, "nc_flags"), prefix="nc_", source="nc_flags")}
    options.update(parse_flag_groups({"finetune": (FinetuneOptions, "ft_"), "nad": (NADOptions, "nad_"),
                                      "argd": (ARGDOptions, "argd_")}, split_flags(args.erase_flags, "erase_flags"), "erase_flags"))
    options["tune"] = parse_flags(TuneOptions, split_flags(args.tune_flags, "tune_flags"), prefix="tune_", source="tune_flags")
    options["scatter"] = ScatterOptions(figure_dir=args.figure_dir)
    second = None if args.second_model.lower() == "none" else args.second_model
    return Grid(base=base, attacks=tuple(args.attacks), lambdas=tuple(args.lambdas),
                defended_attacks=tuple(args.defended_attacks), erased_attacks=tuple(args.erased_attacks),
                second_model=second, second_width=args.second_width, second_attacks=tuple(args.second_attacks),
                focus_attack=args.focus_attack, kernels=tuple(args.kernels), seeds=tuple(args.seeds), kernel_seeds=tuple(args.kernel_seeds),
                compare_pooled=not args.no_pooled, stage_options=options, erasing_seeds=tuple(args.erasing_seeds),
                reference_model=None if str(args.reference_model).lower() == "none" else args.reference_model,
                reference_lr=args.reference_lr, erase_share_of=args.erase_share_of,
                adaptive_attacks=tuple(args.adaptive_attacks),
                stacked_attacks=tuple(args.stacked_attacks), adaptive_rates=tuple(adaptive_rates(args.adaptive_rates)),
                regularizer_attacks=tuple(args.regularizer_attacks), regularizer_seeds=tuple(args.regularizer_seeds))


def adaptive_rates(values) -> list:
    from experiments.grid import REFERENCE_RATE
    from utils.errors import UserError

    rates = []
    for value in values:
        try:
            rate = REFERENCE_RATE if value == REFERENCE_RATE else float(value)
        except ValueError:
            rate = None
        if rate is None or (rate != REFERENCE_RATE and not 0 < rate < 1):
            raise UserError(f"--adaptive_rates takes fractions in (0, 1) or '{REFERENCE_RATE}', got '{value}'")
        rates.append(rate)
    return rates


def draw_claim_figures(grid, runs, judged: list, args) -> dict:
    """The seeds' spread of every claim (``judged``), and the figures the claims draw; {caption: path}."""
    from experiments.claims import claim_figures
    from visualization.claims import seeds_figure

    figures = {"all claims: seeds": seeds_figure(judged, Path(args.figure_dir) / "claims_seeds.png")}
    figures.update(claim_figures(runs, args.figure_dir))
    return {caption: path for caption, path in figures.items() if path}


def draw_figures(grid, args) -> dict:
    """The group figures of the base seed's λ-sweep and second-model runs of every attack, and the
    feature scatters of the first attack's RBT and ML-/SL-MMDR runs at the largest λ; {caption: path}."""
    from pipeline.rundir import RunDir
    from pipeline.stages import get, run_group_stage, run_stage
    from pipeline.stages.figures import DetectionFigureOptions, FigureOptions, ScatterOptions
    from utils.errors import UserError

    figures = {}
    kinds = ["sweep", "detection"] + (["nc_norms", "prune_curves"] if args.defended_attacks else []) + (
        ["erasing"] if args.erased_attacks else [])
    studies = grid.studies()
    groups = {}
    for config in studies["lambda"] + studies.get("model", []) + studies.get("erase_reference", []):
        if config.seed == grid.base.seed:  # a group figure draws one seed's runs; the claims read every seed
            groups.setdefault((config.group, config.model_name, config.attack_name), []).append(RunDir.of(config))
    paper_groups = {config.group for config in studies["lambda"] + studies.get("model", [])}
    for (group, model, attack), runs in groups.items():
        for kind in kinds if group in paper_groups else ["erasing"]:  # the reference arm has erasing alone
            options = (DetectionFigureOptions if kind == "detection" else FigureOptions)(figure_dir=args.figure_dir)
            try:  # a group with unevaluated runs (a partial report) has no figure yet
                if run_group_stage(kind, group, runs, options):
                    figures[f"{model}, {attack}: {kind}"] = get(kind).output(group, options)
            except UserError as error:
                print(f"note: no {kind} figure for {group} yet: {error}", file=sys.stderr)
    options = grid.stage_options.get("scatter") or ScatterOptions(figure_dir=args.figure_dir)
    for config in studies["lambda"]:
        if grid.draws_features(config, studies):
            try:  # drawn by the grid's scatter stage, which records why a run has none (no malicious group)
                drawn = RunDir.of(config).read("scatter") or run_stage("scatter", config, options)
            except UserError as error:  # a run not trained yet (a partial report)
                drawn = {"figure": None, "reason": str(error)}
            if drawn["figure"] and Path(drawn["figure"]).is_file():
                figures[f"{config.model_name}, {config.attack_name}: features, {config.method}"] = Path(drawn["figure"])
            else:
                print(f"note: no feature scatter for {config.run_name}: {drawn['reason'] or 'its figure is missing'}",
                      file=sys.stderr)
    return figures


def benchmark(grid, args) -> dict:
    """{model: benchmarks/train_step.py's JSON} for each architecture at full width, batch 256, the
    plain ML-MMDR step on this machine's device; saved beside the runs and reused when present."""
    import torch

    from utils.io import read_json, save_json

    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = [grid.base.model_name] + ([grid.second_model] if grid.second_model else [])
    results = {}
    for model in models:
        path = Path(args.out_dir) / f"benchmark_{model}_{device}.json"
        fix = "delete it, and the next run of this command times the step again"
        if not path.is_file() or "plain" not in read_json(path, dict, fix).get("images_per_s", {}):
            command = [sys.executable, str(ROOT / "benchmarks" / "train_step.py"), "--model_name", model,
                       "--device", device, "--steps", "1", "--paths", "plain", "--ddp_ranks", "0",
                       "--skip_broadcast", "--threads", str(args.threads or torch.get_num_threads())]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                print(f"note: the benchmark of {model} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            save_json({"command": " ".join(command[1:]), "machine": describe_machine(), **json.loads(done.stdout)}, path)
        results[model] = read_json(path, dict, fix)
    return results


def versions() -> str:
    import importlib.metadata as metadata

    packages = ("torch", "torchvision", "numpy", "scikit-learn", "scipy")
    found = []
    for name in packages:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return f"Python {platform.python_version()}, " + ", ".join(found)


def main(argv=None) -> int:
    import datasets
    from experiments.claims import judge_all
    from experiments.grid import collect
    from experiments.records import Runs
    from experiments.report import render
    from experiments.wallclock import Invocations, grid_command
    from pipeline.executors import slurm_options
    from pipeline.schedule import RunsFailed, run_jobs
    from utils.io import read_json, save_json, save_text

    args = parse(argv)
    slurm = slurm_options(args)  # checks --jobs, --threads and the Slurm flags before any work
    grid = build_grid(args)
    jobs = [in_recorded_format(job) for job in grid.jobs()]  # every run's configuration is validated here
    timing_path = Path(args.out_dir) / "timings.json"
    timings = (read_json(timing_path, dict, "resolve it (keep every run's entry) or delete it; each run's "
                                            "stage_seconds.json keeps its own times") if timing_path.is_file() else {})
    argv = list(sys.argv[1:] if argv is None else argv)
    invocations = Invocations(Path(args.out_dir) / "invocations.json",
                              machine=f"{platform.node()}: {describe_machine()}", jobs=args.jobs, threads=args.threads,
                              command=None if args.report_only or args.plan else grid_command([], argv))
    if args.plan:  # nothing is run, and nothing written
        print(plan_text(grid, jobs, timings, invocations.ran(), args))
        return 0
    finished = set()

    def record(name: str, stages: dict) -> None:  # saved as each run finishes, so a kill loses none
        timings.setdefault(name, {}).update(stages)
        save_json(timings, timing_path)
        finished.add(name)  # a run with stages in two phases finishes twice but counts once
        invocations.save(runs_finished=len(finished))

    # each run's stages run together, so a machine lost between sessions costs only the runs in flight
    # (the results archive keeps no checkpoint). A tuned erasing reads the tuning of its attack's RBT
    # run: the runs that read another's come last, and one whose tuning is not there yet defers those
    # stages (pipeline.jobs) to a second pass
    reads_other = lambda job: any(Path(getattr(options, "tuned_settings", "") or job.run.path) != job.run.path  # noqa: E731
                                  for _, options in job.stages)
    ordered = sorted(jobs, key=reads_other)
    failed = None  # with --keep_going the grid goes on past a failed run; the report is written, then the error
    if not args.report_only:
        with invocations:
            for retry_failed in (args.retry_failed, False):  # the second pass runs what read another run's output
                phase = [job for job in ordered if not (failed and job.config.run_name in failed.failures)]
                try:
                    run_jobs(phase, args.jobs, threads=args.threads, on_done=record, executor=args.executor,
                             slurm=slurm, submitit_dir=args.submitit_dir, keep_going=args.keep_going,
                             retry_failed=retry_failed)
                except RunsFailed as error:
                    failed = error if failed is None else failed.merge(error)
                if args.executor == "slurm" and any(job.pending() for job in phase):
                    return 0  # queued: the same command, run again once the array has finished, goes on
    timings = with_run_times(timings, jobs)
    attempts = {job.config.run_name: record["attempts"] for job in jobs if (record := job.run.read("stage_runs"))}
    missing = sum(len(job.pending()) for job in jobs)
    stages = (sum(len(job.stages) for job in jobs) - missing, sum(len(job.stages) for job in jobs))
    check_report(args, stages)  # before the figures, which would overwrite the report's own
    figures = draw_figures(grid, args)
    speed = {} if args.no_benchmark else benchmark(grid, args)
    records = collect(grid)
    runs = Runs(records, grid.lamb)
    judged = judge_all(runs)  # once: the figures and the report both show it
    figures.update(draw_claim_figures(grid, runs, judged, args))
    command = grid_command(invocations.ran(), argv)  # the command that made the runs, as they recorded it
    milestones = (args.milestones if args.milestones is not None
                  else datasets.defaults(args.data_name).milestones(args.epochs))
    settings = {
        "command": command.strip(), "versions": versions(), "machine": describe_machine(),
        "timings": timings, "attempts": attempts, "benchmark": speed,
        "invocations": invocations.ran(),
        "jobs": args.jobs, "threads": args.threads,
        "stages": stages,
        "budget": {"profile": args.profile, "hours": BUDGET_HOURS[args.profile], "cores": BUDGET_CORES},
        "facts": {
            "dataset": f"{args.data_name} ({'a seeded stratified ' + str(args.train_subset) + '-image training subset' if args.train_subset else 'the full training set'}, "
                       f"the full test set)",
            "models": f"{args.model_name} at width {args.width:g}"
                      + (f"; {grid.second_model} at width {grid.second_width:g}" if grid.second_model else ""),
            "schedule": f"{args.epochs} epochs, SGD lr 0.01 ÷10 at epochs {' '.join(map(str, milestones)) or '(none)'}, "
                        f"batch {datasets.defaults(args.data_name).batch_size}, seed {args.seed}",
            "memory format of training": memory_formats(jobs),
            "λ": ", ".join(f"{v:g}" for v in args.lambdas) + f" (claims and the other studies at λ = {grid.lamb:g})",
            "attacks": ", ".join(args.attacks),
            "seeds": seeds_fact(grid, args),
            "adaptive attacks (C10, C11)": (", ".join(args.adaptive_attacks) + " under RBT; "
                                            + (", ".join(args.stacked_attacks) or "none") + " also with ML-MMDR; at "
                                            + ", ".join(r if r == "reference" else f"{100 * float(r):g}%"
                                                        for r in args.adaptive_rates)
                                            + " poisoning ('reference': each attack's own)")
            if args.adaptive_attacks or args.stacked_attacks else "none",
            "Neural Cleanse and pruning": f"on the {', '.join(args.defended_attacks) or 'no'} RBT and ML-MMDR runs of "
                                          "the λ sweep and the second architecture, every seed; Neural Cleanse "
                                          + (f"at the reference's budget with {args.nc_flags}" if args.nc_flags else
                                             "at the reference's budget (defend.py's defaults: 1000 clean images, up "
                                             "to 1000 epochs of 31 mini-batches of 32, early stopping)"),
            "erasing": (", ".join(args.erased_attacks) + f", seeds {' '.join(map(str, args.erasing_seeds))}: "
                        + (f"{args.reference_model} trained at lr {args.reference_lr:g} and erased with "
                           + (args.erase_flags or "the NAD/ARGD code's settings") + "; " if grid.reference_model else "")
                        + f"{args.model_name}: each run tuned on its own validation set (the tune stage), then "
                          f"erased with the settings its tuning chose"
                        + (f" ({args.tune_flags})" if args.tune_flags else "")) if args.erased_attacks else "none"}}
    settings["cuts"] = cuts(args, grid)
    settings["differences"] = [
        f"Dataset: {args.data_name} instead of CIFAR-10 and CelebA (the paper's datasets need a GPU at full "
        f"scale); {'a ' + str(args.train_subset) + '-image training subset' if args.train_subset else 'the full training set'}.",
        f"Models: {args.model_name} at width {args.width:g}"
        + (f" and {grid.second_model} at width {grid.second_width:g}" if grid.second_model else "")
        + f" (the paper: width 1); {args.epochs} epochs with lr ÷10 at "
        f"{' '.join(map(str, milestones)) or '(none)'} (the paper's 50% and 70% of 100 epochs).",
        "The loss is Algorithm 1's L1 + L2 + λ·mean-over-levels MMD² (Eq. 6) with the prototype's GMK2 "
        "kernel (TABLE 3), except where a study changes one of them.",
        "Distances and detection pools are drawn from the test set (≤ 500 per set), AC's and SR's clean "
        "reference from the training set's clean target-class images (docs/METHODS.md)."]
    report_dir = Path(args.report).resolve().parent
    relative = {caption: Path(path).resolve().relative_to(report_dir) if Path(path).resolve().is_relative_to(report_dir)
                else Path(path).resolve() for caption, path in figures.items()}
    text = render(records, settings, grid, relative, judged)
    save_text(text, args.report)
    directory = tables_dir(args)
    tables = write_tables(text, directory)
    print(f"wrote {args.report} and its {len(tables)} tables as CSV under {directory}")
    if failed:  # the report says which stages are missing; the error says why
        raise failed
    return 0


def seeds_fact(grid, args) -> str:
    """The seeds of each study the grid runs, in one line of the report's setting."""
    studies = grid.studies()
    seeds = lambda name: " ".join(map(str, dict.fromkeys(c.seed for c in studies[name])))  # noqa: E731
    parts = [f"the λ sweep{', the second architecture' if 'model' in studies else ''}"
             f"{' and the adaptive study' if 'adaptive' in studies else ''} on seeds {seeds('lambda')} (its smaller λ "
             f"on seed {args.seed} alone)"]
    parts += [f"{label} on {seeds(name)}" for name, label in
              (("kernel", "the kernel study (C6)"), ("erase_tuned", "erasing (C7)"),
               ("regularizers", "the regularizers study (C12, C13)"), ("loss", "the loss study")) if name in studies]
    return "; ".join(parts) + ". A claim reading two studies is judged on the seeds they share"


def with_run_times(timings: dict, jobs: list) -> dict:
    """timings.json's {run: {stage: seconds}} with each run's own stage_seconds.json over it (a stage's
    time is saved in its run as it ends, so a run cut off later keeps it); runs with none left out."""
    merged = {name: dict(stages) for name, stages in timings.items()}
    for job in jobs:
        merged[job.config.run_name] = {**merged.get(job.config.run_name, {}), **(job.run.read("stage_seconds") or {})}
    return {name: stages for name, stages in merged.items() if stages}


def plan_text(grid, jobs: list, timings: dict, ran: list, args) -> str:
    """--plan: the grid's stages and their estimated hours (experiments.plan), nothing run. ``ran``:
    the invocations that ran stages (wallclock.Invocations.ran)."""
    from experiments.plan import estimate, render

    studies = {study: [config.run_name for config in configs] for study, configs in grid.studies().items()}
    pending = {job.config.run_name: [name for name, _ in job.pending()] for job in jobs}
    # the times the newest invocation that ran stages measured: the code and machine as they are now
    newest = max((entry["started"] for entry in ran), default=None)
    recent = {}
    for job in jobs if newest else ():
        for attempt in (job.run.read("stage_runs") or {}).get("attempts", []):
            if attempt.get("ended", "") >= newest and not attempt.get("resumed"):
                recent.setdefault(job.config.run_name, {})[attempt["stage"]] = attempt["seconds"]
    return render(estimate(jobs, studies, with_run_times(timings, jobs), pending, recent), args.jobs,
                  BUDGET_HOURS[args.profile])


def tables_dir(args) -> Path:
    """Where the report's tables go as CSV: beside the runs (``<out_dir>/tables``) for the profile's own
    report, and beside any other report (``<report>_tables``), so that a report written elsewhere, say
    a partial one while the grid runs, never replaces the tables of the report the archive holds."""
    from experiments.options import ReproduceOptions

    own = PROFILES[args.profile].get("report", ReproduceOptions.report)
    if Path(args.report).resolve() == Path(own).resolve():
        return Path(args.out_dir) / "tables"
    return Path(args.report).with_name(Path(args.report).stem + "_tables")


def write_tables(report_text: str, directory: Path) -> list:
    """Every table of the report as CSV in ``directory`` (experiments.tables.tables_as_csv), the
    tables of an earlier report removed first, so that none outlives the report it came from."""
    from experiments.tables import tables_as_csv
    from utils.io import save_text

    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.csv"):
        stale.unlink()
    written = []
    for name, text in tables_as_csv(report_text).items():
        save_text(text, directory / name)
        written.append(directory / name)
    return written


def in_recorded_format(job):
    """``job`` with the memory format its run was trained in, where it was: a run keeps it for its later
    stages and for a retrain that restores its checkpoint. The format is an execution setting, not part
    of the run's identity, but training's float rounding depends on it: a run retrained in another
    format would not be the model its records describe."""
    from dataclasses import replace

    recorded = (job.run.read("config") or {}).get("channels_last")
    if recorded is not None and recorded != job.config.channels_last:
        job.config = replace(job.config, channels_last=recorded)
    return job


def memory_formats(jobs: list) -> str:
    """How many trained runs used channels-last and how many NCHW, from each run's config.json (a grid
    that changed its memory format part way holds both: different models of the same experiments)."""
    formats = [(job.run.read("config") or {}).get("channels_last") for job in jobs]
    counts = {"channels-last": formats.count(True), "NCHW": formats.count(False)}
    shown = [f"{name} ({count} run{'s' * (count != 1)})" for name, count in counts.items() if count]
    return (", ".join(shown) + (" — the same experiments, trained with another float rounding from the first "
                                "step on (a run's memory format is not part of its identity)" if len(shown) > 1 else "")
            if shown else "no run trained yet")


def cuts(args, grid) -> list:
    """What this grid leaves out or shortens to fit its time budget, each with why (the report says so)."""
    found = []
    kernel_seeds = grid.kernel_claim_seeds if grid.kernels else ()
    if grid.kernels and len(kernel_seeds) < len(grid.claim_seeds):
        found.append(f"the kernel study (C6) on seeds {' '.join(map(str, kernel_seeds))} of "
                     f"{' '.join(map(str, grid.claim_seeds))} (issue 45 lets C1–C6 stay on three)")
    if len(grid.claim_seeds) > 1 and len(args.lambdas) > 1:
        found.append(f"λ = {', '.join(f'{v:g}' for v in sorted(args.lambdas)[:-1])} on seed {args.seed} alone (the "
                     f"claims are judged at λ = {grid.lamb:g}, on every seed)")
    if "--nc_epochs" in args.nc_flags:
        found.append(f"Neural Cleanse with {args.nc_flags} instead of the reference's 1000 epochs (a run that never "
                     "stops early costs 45 minutes at 1000 on a CPU)")
    if args.defended_attacks:
        found.append("no Neural Cleanse or pruning on SL-MMDR runs (no claim reads them), and RBT's Neural Cleanse "
                     f"on seed {args.seed} alone (C5 reads ML-MMDR's)")
    if "--defense_eval_subset" in args.erase_flags:
        found.append("each erasing epoch's BA/ASR (and so the last-5-epoch ASR C7 reads) on a seeded test subset "
                     f"({args.erase_flags}); before and after on the whole test set")
    if args.erased_attacks and set(args.erased_attacks) != set(args.attacks):
        found.append(f"erasing on {', '.join(args.erased_attacks)} only (of {', '.join(args.attacks)})")
    return found


def check_report(args, stages: tuple) -> None:
    """Refuse, with one line, to write a report that says less than what it replaces: one read from a
    runs directory holding no finished stage of this grid (a mistyped --out_dir, an empty directory)
    would turn a finished report into "0 of N stages", and one from fewer finished stages than the
    report on disk records would silently lose results. --force allows the second, never the first."""
    from experiments.report import describe_stages, less_complete, recorded_stages
    from utils.errors import UserError

    done, total = stages
    if Path(args.report).is_dir():
        raise UserError(f"--report {args.report} is a directory; give the path of the Markdown file to write")
    if done == 0:
        where = "does not exist" if not Path(args.out_dir).is_dir() else "holds no finished stage of this grid"
        raise UserError(f"--out_dir {args.out_dir} {where}, so there is no report to write and {args.report} is left "
                        f"as it is; check --out_dir and the grid's flags, or run the grid first (without --report_only)")
    report = Path(args.report)
    if args.force or not report.is_file():
        return
    try:
        old = recorded_stages(report.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read --report {report} ({error}); give another --report, or --force to replace "
                        f"it") from None
    if old is None:
        raise UserError(f"--report {report} exists and is not a report this command wrote; give another --report, "
                        f"or --force to replace it")
    if less_complete(stages, old):
        raise UserError(f"{report} records {describe_stages(old)}, and the report from --out_dir {args.out_dir} would "
                        f"record {done} of {total}; {report} is left as it is: finish the grid, give another --report, "
                        f"or --force to replace it")


def describe_machine() -> str:
    import os

    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    # the CPU kernels torch picks (AVX2, AVX512, …) change the numerics, and so does the CPU itself under
    # one capability (oneDNN tunes its kernels per vendor and model): a run restored from the archive by
    # retraining keeps its records only where its weights match
    model = cpu_model()
    return (f"{device}, {os.cpu_count()} cores, {platform.machine()}, {torch.backends.cpu.get_cpu_capability()}"
            + (f", {model}" if model else ""))


def cpu_model(cpuinfo: str = None) -> str:
    """The CPU's model name as Linux reports it (/proc/cpuinfo), or platform.processor() elsewhere."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as handle:
                cpuinfo = handle.read()
        except OSError:
            return platform.processor()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return " ".join(value.split())
    return ""


if __name__ == "__main__":
    sys.exit(run_cli(main))
