"""Every numeric flag of every entry script, generated from its declaration: NaN, ±inf and values
outside its domain end with one line on stderr, exit status 2, and no run directory."""
import pytest

import attacks
import defend
import evaluate
import main
import visualize
from defenses import NCOptions, PruneOptions
from evaluation.protocol import EvalOptions
from pipeline.cli import run_cli
from pipeline.config import RunConfig
from pipeline.flags import flag_name
from pipeline.stages.figures import DetectionFigureOptions, ScatterOptions
from utils.params import declared, default_of

DIGITS = ["--data_name", "digits"]
# (script, declaring class, flag prefix, flags that select it)
SOURCES = [(main, RunConfig, "", [])]
SOURCES += [(main, cls, "", ["--attack_name", name]) for name, cls in attacks.REGISTRY.items()]
SOURCES += [(evaluate, EvalOptions, "", []), (defend, NCOptions, "nc_", ["--defense", "nc"]),
            (defend, PruneOptions, "prune_", ["--defense", "prune"]), (visualize, ScatterOptions, "", []),
            (visualize, DetectionFigureOptions, "", ["--detection", "runs"])]


def bad_values(f) -> list:
    """NaN, ±inf, and just outside each declared bound."""
    meta, default = f.metadata, default_of(f)
    kind = meta.get("type") or type(default[0] if isinstance(default, (list, tuple)) else default)
    values = ["nan", "inf", "-inf"]
    step = 1 if kind is int else 1e-3
    if meta.get("low") is not None:
        values.append(str(meta["low"] if meta["low_open"] else meta["low"] - step))
    if meta.get("high") is not None:
        values.append(str(meta["high"] if meta["high_open"] else meta["high"] + step))
    return values


CASES = [(script, prefix, extra, f.name, value)
         for script, cls, prefix, extra in SOURCES for f in declared(cls)
         if (f.metadata.get("type") or type(default_of(f) if not isinstance(default_of(f), (list, tuple))
                                             else default_of(f)[0])) in (int, float)
         and not isinstance(default_of(f), bool)
         for value in bad_values(f)]


def test_the_table_covers_every_numeric_flag():
    names = {(script.__name__, name) for script, _, _, name, _ in CASES}
    assert ("main", "lr") in names and ("main", "wanet_k") in names and ("defend", "epochs") in names
    assert ("evaluate", "pool_ratios") in names and ("visualize", "num_samples") in names
    assert len(CASES) > 150


@pytest.mark.parametrize("script,prefix,extra,name,value", CASES,
                         ids=[f"{c[0].__name__}-{c[3]}={c[4]}" for c in CASES])
def test_a_bad_number_is_one_line_and_leaves_nothing(script, prefix, extra, name, value, tmp_path, capsys):
    cls = next(cls for s, cls, p, e in SOURCES if s is script and p == prefix and e == extra)
    field = next(f for f in declared(cls) if f.name == name)
    flag = flag_name(field, prefix)
    argv = DIGITS + extra + [flag, value, "--out_dir", str(tmp_path / "runs"), "--no_progress"]
    if script is visualize:
        argv += ["--figure_dir", str(tmp_path / "figures")]
    assert run_cli(script.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert flag.lstrip("-") in err[0] or repr(value) in err[0] or value in err[0], err[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "figures").exists()


def test_a_width_too_large_to_build_is_one_line(tmp_path, capsys):
    """--width 1e308 is finite but overflows a layer's channel count: refused by its bound."""
    assert run_cli(main.main, DIGITS + ["--width", "1e308", "--out_dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: --width must be in (0, 16], got 1e+308"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script, flag", [("reproduce", "--eval_flags"), ("reproduce", "--nc_flags"),
                                          ("sweep", "--flags")])
def test_a_line_of_flags_with_an_unclosed_quote_is_one_line(script, flag, tmp_path, capsys):
    import importlib

    module = importlib.import_module(f"experiments.{script}")
    extra = ["--data_name", "digits"] if script == "sweep" else ["--report_only", "--out_dir", str(tmp_path / "runs")]
    assert run_cli(module.main, extra + [flag, "'x"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: {flag} cannot be split into flags (No closing quotation)") and "\n" not in error
