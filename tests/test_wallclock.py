"""The grid's wall-time record (experiments/wallclock.py): an invocation cut off between finished
runs still has its time saved, and earlier invocations are kept."""
import json
import time

import pytest

from experiments.wallclock import Invocations


def test_the_minute_tick_saves_the_time_of_an_invocation_that_finished_no_run(tmp_path):
    path = tmp_path / "invocations.json"
    path.write_text(json.dumps([{"started": "earlier", "wall_s": 100.0, "runs_finished": 3}]))
    invocations = Invocations(path, every_s=0.05)
    with invocations:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the tick, not a finished run, writes this invocation's entry
            saved = json.loads(path.read_text())
            if len(saved) == 2:
                break
            time.sleep(0.02)
        assert saved[0] == {"started": "earlier", "wall_s": 100.0, "runs_finished": 3}
        assert saved[1]["wall_s"] > 0 and saved[1]["runs_finished"] == 0
        invocations.save(runs_finished=2)
    saved = json.loads(path.read_text())
    assert saved[1]["runs_finished"] == 2 and saved[1]["wall_s"] >= 0.05
    assert [i["started"] for i in invocations.ran()] == ["earlier", saved[1]["started"]]


def test_an_invocation_that_ran_nothing_is_not_counted(tmp_path):
    invocations = Invocations(tmp_path / "invocations.json")  # a report-only invocation never enters
    assert invocations.ran() == [] and not (tmp_path / "invocations.json").exists()


def test_an_invocation_that_found_nothing_to_run_is_not_counted_and_names_its_machine(tmp_path):
    with Invocations(tmp_path / "invocations.json", machine="host-a: CPU, 2 cores", jobs=2, threads=1) as invocations:
        pass  # every stage already finished: the command only rewrites the report
    saved = json.loads((tmp_path / "invocations.json").read_text())
    assert saved[0]["machine"] == "host-a: CPU, 2 cores" and saved[0]["wall_s"] < 60
    assert (saved[0]["jobs"], saved[0]["threads"]) == (2, 1)
    assert invocations.ran() == []


def test_the_report_states_the_settings_the_stages_ran_with_not_the_reporting_commands():
    from experiments.records import Runs
    from experiments.sections import section_setting

    settings = {"stages": (2, 2), "command": "python experiments/reproduce.py --report_only", "versions": "v",
                "machine": "m", "facts": {}, "timings": {"run": {"train": 7200.0}}, "jobs": 1, "threads": None}
    ran = {"started": "s", "wall_s": 3600.0, "runs_finished": 1, "jobs": 2, "threads": 1}
    text = "\n".join(section_setting({**settings, "invocations": [ran, ran]}, Runs([], 0.3)))
    assert ("The command's measured wall time: 2.0 h, over the 2 invocations that ran stages (CPU threads per run: 1, "
            "runs at once: 2; each counted to its last minute). Stage time summed over every invocation, every stage "
            "counted: 2.0 h") in text
    older = {key: value for key, value in ran.items() if key not in ("jobs", "threads")}  # not the reporting command's
    text = "\n".join(section_setting({**settings, "invocations": [ran, older]}, Runs([], 0.3)))
    assert ("(runs at once and threads per run not recorded by an earlier invocation; CPU threads per run: 1, "
            "runs at once: 2; each counted to its last minute)") in text



def test_the_report_measures_the_commands_wall_time_against_the_profiles_budget():
    """The budget is one of wall time: the invocations' measured seconds are held against it, not the
    stage time divided by anything; a run without a training time is named."""
    from experiments.records import Runs
    from experiments.sections import section_setting

    ran = {"started": "s", "wall_s": 3600.0 * 6, "runs_finished": 1, "jobs": 2, "threads": 1}
    settings = {"command": "c", "versions": "v", "machine": "m", "facts": {}, "jobs": 2, "threads": 1,
                "invocations": [ran, ran], "budget": {"profile": "full", "hours": 10, "cores": 2},
                "timings": {"a": {"train": 72000.0}, "b": {"evaluate": 14400.0}}}
    finished = {**settings, "stages": (3, 3)}
    text = "\n".join(section_setting(finished, Runs([], 0.3)))
    assert ("The full profile's budget is 10 h of wall time on 2 CPU cores; the command took 12.0 h, over it by "
            "2.0 h.") in text
    assert ("Stage time summed over every invocation, every stage counted: 24.0 h (2 of the 2 runs ran stages before "
            "every attempt was recorded") in text and "1 run without a recorded training time: b." in text
    # a run whose every attempt is recorded counts them all: a training cut off after 2 h and resumed for 18 h
    attempts = {**finished, "attempts": {"a": [{"stage": "train", "seconds": 7200.0},
                                               {"stage": "train", "seconds": 64800.0}]}}
    assert ("every stage counted: 24.0 h (1 of the 2 runs ran stages before every attempt was recorded"
            in "\n".join(section_setting(attempts, Runs([], 0.3))))
    # an archived run re-evaluated since: its evaluations are on record, its training only as a last time
    archived = {**finished, "timings": {"a": {"train": 3600.0, "evaluate": 60.0}},
                "attempts": {"a": [{"stage": "evaluate", "seconds": 60.0}]}}
    assert "every stage counted: 1.0 h (1 of the 1 runs ran stages before" in "\n".join(
        section_setting(archived, Runs([], 0.3)))
    attempts["attempts"]["b"] = [{"stage": "evaluate", "seconds": 3600.0}, {"stage": "evaluate", "seconds": 14400.0}]
    assert "every stage counted: 25.0 h; 1 run without" in "\n".join(section_setting(attempts, Runs([], 0.3)))
    within = {**finished, "invocations": [{**ran, "wall_s": 3600.0 * 9.5}]}
    assert "the command took 9.5 h, within it." in "\n".join(section_setting(within, Runs([], 0.3)))
    partial = {**finished, "stages": (2, 3)}
    assert "the finished stages have taken 12.0 h of it." in "\n".join(section_setting(partial, Runs([], 0.3)))
    # no invocation recorded: no verdict
    assert "profile's budget" not in "\n".join(section_setting({**finished, "invocations": []}, Runs([], 0.3)))


def test_the_report_names_the_machines_the_stages_ran_on_not_only_the_writers():
    from experiments.sections import machines_of

    ran = [{"machine": "vm: CPU, 2 cores, x86_64, AVX2"}, {"machine": "vm: CPU, 2 cores, x86_64, AVX512"},
           {"machine": "other: CPU, 2 cores, x86_64, AVX512"}, {"wall_s": 60.0}]
    assert machines_of({"machine": "CPU, 2 cores, x86_64, AVX512", "invocations": ran}) == (
        "the stages ran on CPU, 2 cores, x86_64, AVX2; CPU, 2 cores, x86_64, AVX512; this report was written on "
        "CPU, 2 cores, x86_64, AVX512")
    assert machines_of({"machine": "GPU", "invocations": ran[1:3]}) == ("the stages ran on CPU, 2 cores, x86_64, "
                                                                         "AVX512; this report was written on GPU")
    assert machines_of({"machine": "GPU", "invocations": ran[1:2]}) == ("the stages ran on CPU, 2 cores, x86_64, "
                                                                         "AVX512; this report was written on GPU")
    assert machines_of({"machine": "CPU, 2 cores, x86_64, AVX512", "invocations": ran[1:3]}) == (
        "the stages ran on CPU, 2 cores, x86_64, AVX512")
    assert machines_of({"machine": "GPU", "invocations": []}) == "GPU"


def test_the_report_names_the_command_that_made_the_runs_not_the_one_rewriting_it():
    """--report_only rewrites the report with its own flags; the Command line must still be the
    grid's: the last recorded command, or for older entries their --jobs and --threads (the thread
    count changes the numbers)."""
    from experiments.wallclock import grid_command

    older = [{"wall_s": 60.0, "runs_finished": 3, "jobs": 2, "threads": 1}]
    assert grid_command(older, ["--report_only"]) == "python experiments/reproduce.py --jobs 2 --threads 1"
    assert grid_command(older, ["--report_only", "--threads", "4", "--out_dir", "a b"]) == (
        "python experiments/reproduce.py --jobs 2 --threads 1 --out_dir 'a b'")
    recorded = older + [{"wall_s": 9.0, "runs_finished": 1, "jobs": 1, "threads": 2,
                         "command": "python experiments/reproduce.py --jobs 1 --threads 2"}]
    assert grid_command(recorded, ["--report_only", "--jobs", "8"]) == "python experiments/reproduce.py --jobs 1 --threads 2"
    assert grid_command([], ["--profile", "quick", "--report_only"]) == "python experiments/reproduce.py --profile quick"


def test_an_invocation_records_its_command(tmp_path):
    with Invocations(tmp_path / "invocations.json", every_s=60, jobs=2, threads=1,
                     command="python experiments/reproduce.py --jobs 2 --threads 1") as invocations:
        invocations.save(runs_finished=1)
    entry = json.loads((tmp_path / "invocations.json").read_text())[0]
    assert entry["command"] == "python experiments/reproduce.py --jobs 2 --threads 1"


CONFLICT = '[\n<<<<<<< HEAD\n  {"wall_s": 60.0, "runs_finished": 1}\n=======\n  {"wall_s": 70.0, "runs_finished": 2}\n>>>>>>> other\n]\n'


def test_a_record_with_a_merge_conflict_is_one_line(tmp_path):
    """The archive travels between machines by git: a conflicted invocations.json or timings.json is
    named with what to do, never a JSONDecodeError."""
    from utils.errors import UserError

    (tmp_path / "invocations.json").write_text(CONFLICT)
    with pytest.raises(UserError, match=r"invocations.json holds a git merge conflict; resolve it"):
        Invocations(tmp_path / "invocations.json")
    (tmp_path / "invocations.json").write_text('{"wall_s": 1}')
    with pytest.raises(UserError, match=r"invocations.json holds a JSON dict, not a list"):
        Invocations(tmp_path / "invocations.json")


def test_reproduce_refuses_a_conflicted_timings_file_in_one_line(tmp_path, capsys):
    from experiments.reproduce import main as reproduce_main
    from pipeline.cli import run_cli

    (tmp_path / "timings.json").write_text(CONFLICT.replace("[", "{").replace("]", "}"))
    assert run_cli(reproduce_main, ["--report_only", "--out_dir", str(tmp_path), "--report", str(tmp_path / "R.md")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "timings.json holds a git merge conflict; resolve it" in error
    assert not (tmp_path / "R.md").exists()
