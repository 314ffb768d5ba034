"""qtl is a plain library: importing every module of it never loads streamlit, its modules import one
another without cycles, its configs and names load without torch, and each subpackage's docstring names
its modules (docs/architecture.md sends readers there)."""

import ast
import re
import subprocess
import sys

from conftest import REPO

PROBE = """
import importlib, pkgutil, sys
import qtl
names = [m.name for m in pkgutil.walk_packages(qtl.__path__, "qtl.")]
for name in names:
    importlib.import_module(name)
print(len(names), "streamlit" in sys.modules)
"""


def test_no_module_of_qtl_imports_streamlit():
    """Every qtl module imports in a fresh interpreter, and none of them pulls in streamlit."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300, check=True
    ).stdout.split()
    assert int(out[0]) >= 20  # the walk really found the package's modules
    assert out[1] == "False"


def unnamed_modules(package) -> list[str]:
    """The modules and subpackages of a package folder that its `__init__.py` docstring does not name."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    parts = [p.stem for p in package.glob("*.py") if p.stem != "__init__"]
    parts += [p.name for p in package.iterdir() if (p / "__init__.py").is_file()]
    return sorted(name for name in parts if not re.search(rf"\b{name}\b", doc))


def test_each_subpackage_names_its_modules(tmp_path):
    """Every subpackage of qtl lists each of its modules in its docstring; a new one left out fails."""
    packages = [p.parent for p in (REPO / "qtl").glob("*/**/__init__.py")]
    assert len(packages) >= 10
    assert {p.name: unnamed_modules(p) for p in packages if unnamed_modules(p)} == {}
    (tmp_path / "__init__.py").write_text('"""Listed: alpha."""\n')
    for name in ("alpha.py", "beta.py"):
        (tmp_path / name).write_text("")
    assert unnamed_modules(tmp_path) == ["beta"]


def loads_torch(statement: str) -> bool:
    """Whether running `statement` in a fresh interpreter imports torch."""
    probe = f"import sys; {statement}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


def test_paths_are_known_without_torch():
    """qtl.paths (asked by the app's first page and the CLI) answers without loading torch."""
    assert not loads_torch("import qtl.paths as p; p.models_dir(); p.default_data_dir()")


def test_configs_and_recipes_without_torch():
    """qtl.config (names, configs, recipes) builds and round-trips its configs without loading torch;
    the control proves the probe sees torch when a module does load it."""
    assert not loads_torch(
        "from qtl.config import MachineConfig, ModelConfig, TrainConfig, recipe; "
        "ModelConfig.from_dict(ModelConfig('hybrid', class_names=('a', 'b')).to_dict()); "
        "TrainConfig.from_dict(recipe('linear').to_dict()); MachineConfig(data_dir='.')"
    )
    assert loads_torch("import qtl.models.variants")


def module_imports() -> dict[str, set[str]]:
    """qtl module -> the qtl modules it imports anywhere in its file (at the top or inside a function;
    not under `if TYPE_CHECKING:`, which never runs). `from pkg import name` counts as importing the
    submodule pkg.name when there is one, else pkg."""
    files = {}
    for path in (REPO / "qtl").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def imported(node: ast.AST, name: str, path) -> set[str]:
        if isinstance(node, ast.Import):
            return {a.name for a in node.names if a.name in files}
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = node.module or ""
        if node.level:  # relative: from . import x, from ..y import z
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        return {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names} & set(files)

    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        type_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body
            for n in ast.walk(stmt)
        }
        graph[name] = set().union(
            *(
                imported(n, name, path)
                for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in type_only
            )
        ) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None."""
    state: dict[str, str] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt, stack)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_the_import_graph_of_qtl_has_no_cycles():
    """No qtl module imports (even lazily, inside a function) one that imports it back."""
    graph = module_imports()
    assert {"qtl.config", "qtl.training.fit", "qtl.quantum.engines.native"} <= set(graph)
    assert {"qtl.config", "qtl.models.checkpoint", "qtl.data.feed"} <= graph["qtl.training.fit"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    """Control: a lazy two-module circle and a longer one are found; a diamond is not a cycle."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_no_tracked_file_holds_merge_conflict_markers():
    """A merge left half-resolved never ships: no tracked text file has a line starting a conflict hunk."""
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    marker = re.compile(r"^(<{7} |>{7} )", re.M)
    found = []
    for name in listed.stdout.splitlines():
        path = REPO / name
        if path.suffix in {".py", ".md", ".toml", ".txt", ".cfg", ".sh", ".yml", ".yaml"} and path.is_file():
            if marker.search(path.read_text(errors="replace")):
                found.append(name)
    assert len(listed.stdout.splitlines()) > 50  # the listing really saw the repository
    assert found == []


def requirement_names(lines) -> set[str]:
    """The canonical project names of requirement lines (comments and blank lines skipped)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = (line.split("#")[0].strip() for line in lines)
    return {canonicalize_name(Requirement(line).name) for line in lines if line}


def test_requirements_txt_installs_every_extra():
    """requirements.txt (what scripts/test.sh and hosts install) holds the core dependencies and every
    optional extra of pyproject.toml, so the suite proves each extra and docs/hosting.md says true."""
    from qtl.experiments.spec import tomllib  # tomli before Python 3.11

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = requirement_names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= requirement_names(extra) - {"qtl"}
    assert len(wanted) >= 25
    have = requirement_names((REPO / "requirements.txt").read_text().splitlines())
    assert sorted(wanted - have) == []
    assert requirement_names(["mlflow-skinny>=2.10  # a note", "", "# only a comment"]) == {"mlflow-skinny"}
