"""The import arrows run one way: entry scripts → pipeline (the run layer) → library → utils.

Each package may import only packages of a lower rank (and itself); packages of the same rank stay
independent of each other, and no modules anywhere import each other in a circle. The walk reads
every import statement with ast, including the ones inside functions, so a lazy import cannot hide
an arrow that runs back up, nor a circle.
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


def module_of(path: Path, root: Path) -> str:
    """'pipeline.stages.train' for pipeline/stages/train.py, 'pipeline' for pipeline/__init__.py."""
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def project_modules(root: Path) -> dict:
    """{module name: path} of every module of the project's layered packages and scripts."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        if "tests" not in path.relative_to(root).parts and owner(path, root) in RANK:
            found[module_of(path, root)] = path
    return found


def module_imports(root: Path, within: str = None) -> dict:
    """{module: {(imported project module, at module level?)}} for every project module (or those of
    the package ``within``). Every import statement counts, the ones inside functions too, so a lazy
    import cannot hide a circle; ``from a.b import c`` imports the module a.b.c where there is one."""
    modules = project_modules(root)
    graph = {}
    for module, path in modules.items():
        if within and module.split(".")[0] != within:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(node) for node in tree.body}
        found = set()
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                submodules = [f"{node.module}.{alias.name}" for alias in node.names]
                names = [name for name in submodules if name in modules] or [node.module]
            found.update((name, id(node) in top) for name in names if name in modules)
        graph[module] = found
    return graph


def pipeline_imports(root: Path) -> dict:
    """module_imports of pipeline/, restricted to the pipeline modules they import."""
    return {module: {(name, at_top) for name, at_top in names if name.split(".")[0] == "pipeline"}
            for module, names in module_imports(root, "pipeline").items()}


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


def test_no_import_circle_anywhere_in_the_project():
    """Across every package and script, with imports inside functions counted as arrows."""
    assert circles(module_imports(ROOT)) == []


def test_a_circle_hidden_in_a_function_outside_pipeline_is_found(tmp_path):
    """The checker itself, on the circle the report's claims once had: claims.py imported the later
    claims inside a function, and they imported claims.py back."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "__init__.py").write_text("")
    (tmp_path / "experiments" / "claims.py").write_text("def claims():\n    from experiments.later import EXTENDED\n")
    (tmp_path / "experiments" / "later.py").write_text("from experiments.claims import Claim\n")
    assert circles(module_imports(tmp_path)) == [["experiments.claims", "experiments.later", "experiments.claims"]]


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
