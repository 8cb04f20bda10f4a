"""The import arrows run one way: entry scripts → pipeline (the run layer) → library → utils.

Each package may import only packages of a lower rank (and itself); packages of the same rank stay
independent of each other. The walk reads every import statement with ast, including the ones
inside functions, so a lazy import cannot hide an arrow that runs back up.
"""
import ast
from pathlib import Path

from tests.conftest import ROOT

LAYERS = (
    ("utils",),
    ("datasets", "models"),
    ("attacks", "regularizers", "inference"),
    ("metrics",),
    ("defenses", "training"),
    ("evaluation",),
    ("visualization",),
    ("pipeline",),
    ("main", "evaluate", "defend", "visualize", "experiments", "benchmarks"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def imported_modules(path: Path) -> set:
    """Top-level names of every module ``path`` imports (absolute imports; the project uses no
    relative ones)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def owner(path: Path, root: Path) -> str:
    relative = path.relative_to(root)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def violations(root: Path) -> list:
    """['a/b.py imports c (rank x ≥ rank y)'] for every arrow that does not point strictly down."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if "tests" in path.relative_to(root).parts or owner(path, root) not in RANK:
            continue
        source = owner(path, root)
        for target in sorted(imported_modules(path) & set(RANK)):
            if target != source and RANK[target] >= RANK[source]:
                found.append(f"{path.relative_to(root)} imports {target} "
                             f"(layer {RANK[target]} is not below {source}'s layer {RANK[source]})")
    return found


def test_every_project_package_has_a_layer():
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - {"tests"}
    scripts = {path.stem for path in ROOT.glob("*.py")}
    assert packages | scripts <= set(RANK) | {"conftest"}, sorted((packages | scripts) - set(RANK))


def test_imports_point_down_the_layers():
    assert violations(ROOT) == []


def test_utils_imports_nothing_of_the_project_but_utils():
    for path in (ROOT / "utils").glob("*.py"):
        assert imported_modules(path) & set(RANK) <= {"utils"}, path.name


def test_an_arrow_back_up_is_reported(tmp_path):
    """The checker itself: a library module importing the run layer, and a same-layer import."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "bad.py").write_text("def f():\n    from pipeline.config import RunConfig\n")
    (tmp_path / "attacks").mkdir()
    (tmp_path / "attacks" / "sideways.py").write_text("import regularizers.mmd\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fine.py").write_text("import torch\nfrom utils.errors import UserError\n")
    assert violations(tmp_path) == [
        "attacks/sideways.py imports regularizers (layer 2 is not below attacks's layer 2)",
        "metrics/bad.py imports pipeline (layer 7 is not below metrics's layer 3)"]


def pipeline_imports(root: Path) -> dict:
    """{module: {(imported pipeline module, at module level?)}} for every module of pipeline/."""
    graph = {}
    for path in sorted((root / "pipeline").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(node) for node in tree.body}
        found = set()
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            known = [name for name in names if name.startswith("pipeline") and
                     ((root / name.replace(".", "/")).with_suffix(".py").is_file()
                      or (root / name.replace(".", "/") / "__init__.py").is_file())]
            found.update((name, id(node) in top) for name in known)
        graph[module] = found
    return graph


def test_pipeline_modules_import_each_other_at_the_top_and_without_a_circle():
    """No import of one pipeline module by another hides inside a function (the usual way to dodge
    a circle), and the module graph has no circle."""
    graph = pipeline_imports(ROOT)
    hidden = sorted(f"{module} imports {name} inside a function" for module, names in graph.items()
                    for name, at_top in names if not at_top and name != module)
    assert hidden == []
    assert circles(graph) == []


def circles(graph: dict) -> list:
    """Each circle of imports (a list of modules, the first repeated last) found by a depth-first walk."""
    edges = {module: {name for name, _ in names if name != module and name in graph} for module, names in graph.items()}
    state, found = {}, []

    def visit(module, path):
        if state.get(module) == "open":
            found.append(path[path.index(module):] + [module])
        if state.get(module):
            return
        state[module] = "open"
        for name in sorted(edges[module]):
            visit(name, path + [module])
        state[module] = "done"

    for module in sorted(edges):
        visit(module, [])
    return found


def test_a_hidden_import_and_a_circle_in_pipeline_are_found(tmp_path):
    """The checker itself, on the circle the scheduler and the executors once had."""
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "schedule.py").write_text("def run():\n    from pipeline.executors import submit\n")
    (tmp_path / "pipeline" / "executors.py").write_text("from pipeline.schedule import run\n")
    graph = pipeline_imports(tmp_path)
    assert graph["pipeline.schedule"] == {("pipeline.executors", False)}
    assert graph["pipeline.executors"] == {("pipeline.schedule", True)}
    assert circles(graph) == [["pipeline.executors", "pipeline.schedule", "pipeline.executors"]]
