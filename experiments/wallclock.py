"""The grid command's own wall time across invocations (``<out_dir>/invocations.json``): a grid that
spans several sessions states its total from these. The current invocation's entry is saved as runs
finish and once a minute in between, so the time of an invocation cut off by the end of a session
is counted up to its last minute, not to its last finished run. Each entry names the machine it ran
on, the command that ran, and how many runs it ran at once with how many threads each: the report
states the command and the stages' wall time as they ran, not as the command that writes it is set."""
import shlex
import threading
import time
from pathlib import Path

from utils.io import read_json, save_json


MINUTE_S = 60.0


class Invocations:
    def __init__(self, path, every_s: float = 60.0, machine: str = "", jobs: int = None, threads: int = None,
                 command: str = ""):
        self.path = Path(path)
        self.earlier = (read_json(self.path, list, "resolve it (keep every invocation's entry) or delete it, which "
                                               "forgets the earlier invocations' wall time")
                        if self.path.is_file() else [])
        self.this = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_s": 0.0, "runs_finished": 0,
                     **({"machine": machine} if machine else {}), **({"command": command} if command else {}),
                     **({"jobs": jobs, "threads": threads} if jobs is not None else {})}
        self.every_s = every_s
        self._started = time.perf_counter()
        self._lock = threading.Lock()  # the minute tick and a finished run may save at once
        self._stop = threading.Event()
        self._ticker = None

    def save(self, runs_finished: int = None) -> None:
        with self._lock:
            self.this["wall_s"] = round(time.perf_counter() - self._started, 1)
            if runs_finished is not None:
                self.this["runs_finished"] = runs_finished
            save_json(self.earlier + [self.this], self.path)

    def ran(self) -> list:
        """Every invocation that ran stages, this one included: one that finished a run, or one cut off
        after a minute or more before it finished any; not a report-only one, nor one that found
        nothing left to run."""
        return [i for i in self.earlier + [self.this] if i["runs_finished"] > 0 or i["wall_s"] >= MINUTE_S]

    def __enter__(self) -> "Invocations":
        def tick():
            while not self._stop.wait(self.every_s):
                self.save()

        self._ticker = threading.Thread(target=tick, name="invocation-wall-clock", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._ticker.join()
        self.save()


def grid_command(ran: list, argv: list) -> str:
    """The command that made the runs, read from the invocations that ran stages (``ran``): the last
    one's recorded command; for entries written before commands were recorded, ``argv`` (less
    --report_only) with the --jobs and --threads they all ran with. The flags of a --report_only
    that rewrites the report are not the grid's (the thread count changes the numbers)."""
    recorded = [i["command"] for i in ran if i.get("command")]
    if recorded:
        return recorded[-1]
    shown = [a for a in argv if a != "--report_only"]
    settings = {(i["jobs"], i["threads"]) for i in ran if "jobs" in i}
    if len(settings) == 1:
        jobs, threads = settings.pop()
        shown = _without(shown, ("--jobs", "--threads"))
        shown = ["--jobs", str(jobs)] + (["--threads", str(threads)] if threads else []) + shown
    return ("python experiments/reproduce.py " + " ".join(shlex.quote(a) for a in shown)).strip()


def _without(argv: list, flags: tuple) -> list:
    """``argv`` without the given one-value flags (``--jobs 2`` or ``--jobs=2``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in flags)):
            out.append(arg)
    return out
