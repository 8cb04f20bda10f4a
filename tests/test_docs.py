"""The documents: README's test command is what CI runs, every link resolves, and every committed
figure is shown by some Markdown file."""
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

MARKDOWN = sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


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
