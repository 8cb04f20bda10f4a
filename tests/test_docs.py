"""The documents: README's test command is what CI runs, every link and anchor resolves, every
backticked repository path exists and every backticked dotted name of the project resolves, and
every committed figure is shown by some Markdown file."""
import importlib
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

MARKDOWN = (sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "docs" / "methods").glob("*.md"))
            + [ROOT / "results" / "README.md"])
# The hand-written documents whose backticked references are checked (REPRODUCTION.md is generated).
WRITTEN = [path for path in MARKDOWN if path.name != "REPRODUCTION.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
ANCHORED = re.compile(r"\]\(([^)#\s]*)#([^)\s]+)\)")

# Files of the reference code in other repositories, which the methods pages cite by their path there.
REFERENCE_CODE = {"poison_tool_box/adaptive_blend.py", "poison_tool_box/TaCT.py", "pysrc/train_cifar10.py",
                  "pysrc/SCAn.py", "detection_pretrain/spectre_utils.py", "detection_pretrain/spectre.py",
                  "detection_pretrain/scan.py", "detection_pretrain/beatrix.py", "cleansers_tool_box/strip.py",
                  "cleansers_tool_box/scan.py", "defenses/Beatrix/Beatrix.py"}
# The project's top-level packages and entry scripts: a backticked dotted name starting with one of them must resolve.
PACKAGES = {"utils", "datasets", "models", "attacks", "regularizers", "inference", "metrics", "defenses", "training",
            "evaluation", "visualization", "pipeline", "experiments", "benchmarks", "main", "evaluate", "defend", "visualize"}
FILE_SUFFIXES = {"py", "md", "json", "pt", "csv", "png", "txt", "log", "ini", "jl", "m", "ipynb"}
OUTPUTS = ("runs/", "figures/")  # written by the scripts, not part of the repository (figures/reproduce/ is)
PLACEHOLDERS = ("<", ">", "…", "*", "{", "|", "...")


def fenced_commands(text: str) -> list:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    commands = fenced_commands((ROOT / "README.md").read_text())
    assert commands[0] == "python -m pip install -r requirements.txt && python main.py --data_name digits"
    assert commands[1].endswith("python -m pytest -q tests")
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_relative_link_resolves():
    broken = []
    for path in MARKDOWN:
        for target in LINK.findall(path.read_text()):
            if "://" not in target and not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} → {target}")
    assert broken == []


def anchors(text: str) -> set:
    """The anchors GitHub gives the headings of a Markdown text (lower case, punctuation dropped,
    spaces as hyphens, a repeated heading numbered)."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


def test_every_anchor_of_a_link_names_a_heading():
    broken = []
    for path in MARKDOWN:
        text = path.read_text()
        for target, anchor in ANCHORED.findall(text):
            page = path.parent / target if target else path
            if target and ("://" in target or not target.endswith(".md") or not page.exists()):
                continue
            if anchor not in anchors(page.read_text()):
                broken.append(f"{path.relative_to(ROOT)} → {target}#{anchor}")
    assert broken == []


def backticked(text: str) -> list:
    """The inline code spans of a Markdown text, outside fenced blocks."""
    return re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))


def repository_paths(span: str, root=ROOT) -> list:
    """The words of a code span that name a file or folder of the repository: a word that starts
    with a top-level folder, or ends in .py or .md and holds a "/"; outputs (runs/, figures/),
    placeholders and globs are not paths to check. A ``:line`` suffix is dropped."""
    top = {path.name for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")}
    paths = []
    for word in re.split(r"[\s,;]+", span):
        word = re.sub(r":\d.*$", "", word.strip("().:"))
        if "/" not in word or word.startswith(("/", "~", "-", ".")) or any(mark in word for mark in PLACEHOLDERS):
            continue
        if word.startswith(OUTPUTS) and not word.startswith("figures/reproduce"):
            continue
        if word.split("/")[0] in top or word.endswith((".py", ".md")):
            paths.append(word)
    return paths


def dotted_name(span: str):
    """The dotted name a code span starts with, when its first part is a project package or script
    (cut at a call's arguments, an index or a space: ``attacks.build(name, **params)`` gives
    ``attacks.build``), else None. File names (``metrics.json``) are not dotted names."""
    head = re.split(r"[\s(\[:,]", span.strip(), maxsplit=1)[0]
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", head):
        return None
    parts = head.split(".")
    return head if parts[0] in PACKAGES and parts[-1] not in FILE_SUFFIXES else None


def resolves(name: str) -> bool:
    """Import the longest importable module prefix of ``name``, then look the rest up as attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is None or not module.startswith(error.name):
                raise  # a missing third-party package, not a wrong name
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def reference_problems(text: str, root=ROOT) -> list:
    """Every backticked repository path of ``text`` that does not exist under ``root`` and every
    backticked dotted name of the project that does not resolve, as ``path X`` / ``name X``."""
    problems = []
    for span in backticked(text):
        for path in repository_paths(span, root):
            if path not in REFERENCE_CODE and not (root / path).exists():
                problems.append(f"path {path}")
        name = dotted_name(span)
        if name is not None and not resolves(name):
            problems.append(f"name {name}")
    return list(dict.fromkeys(problems))



def test_the_checker_reports_a_missing_path_and_an_unresolvable_name():
    """The checker itself, on the paths and names the regrouping of defenses/ left behind."""
    text = ("SPECTRE is `defenses/spectre.py`, `spectre(features, poison_count)`; Neural Cleanse's options are\n"
            "`defenses.neural_cleanse.NCOptions` and the registry `defenses.DETECTORS[\"ac\"].display`.\n"
            "It writes `runs/<run>/evaluation.json` (`evaluation.md`); see `defenses/detectors/spectre.py`,\n"
            "`defenses.detectors.spectre.spectre(features, 3)`, `defenses.DETECTORS.nothing`, `training/sync_bn.GlobalBatchNorm`,\n"
            "`python benchmarks/absent.py --run_dir runs/<run>` and the reference's `pysrc/SCAn.py`.\n"
            "```bash\npython `defenses/in_a_fence.py`\n```\n")
    assert reference_problems(text) == ["path defenses/spectre.py", "name defenses.neural_cleanse.NCOptions",
                                        "name defenses.DETECTORS.nothing", "path training/sync_bn.GlobalBatchNorm",
                                        "path benchmarks/absent.py"]


@pytest.mark.parametrize("path", WRITTEN, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_backticked_path_exists_and_every_dotted_name_resolves(path):
    problems = reference_problems(path.read_text())
    assert problems == []


def test_the_anchor_checker_follows_headings():
    text = "# Methods, defaults and their sources\n## SPECTRE\n## SPECTRE\n```\n# not a heading\n```\n### `--ac_reduce` (PCA)\n"
    assert anchors(text) == {"methods-defaults-and-their-sources", "spectre", "spectre-1", "--ac_reduce-pca"}


def committed_figures() -> list:
    """PNG files git tracks (figures a user draws into figures/ are ignored, see .gitignore)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot tell committed figures from drawn ones")
    listed = subprocess.run(["git", "ls-files", "*.png"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in listed.stdout.splitlines()]


def test_every_committed_figure_is_shown_by_a_markdown_file():
    shown = {(path.parent / target).resolve() for path in MARKDOWN for target in LINK.findall(path.read_text())}
    figures = [png for png in committed_figures() if png.parts[len(ROOT.parts)] == "figures"]
    assert figures, "no committed figures found"
    assert [str(png.relative_to(ROOT)) for png in figures if png.resolve() not in shown] == []
