"""How the package's modules import one another (issue 26): never through the former names kept for
users (`ptmoe.model`, `ptmoe.models`), and without a circle, counting the imports inside functions
too (a circle there only waits for the first call to bite)."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
FORMER = {"ptmoe.model", "ptmoe.models"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (SRC / "ptmoe").rglob("*.py")}


def parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imported(name: str) -> set[str]:
    """The package's modules that `name` imports anywhere in its file, with the packages each import
    runs on the way (an import of ptmoe.methods.pt runs ptmoe.methods first), its own ancestors aside."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names]
        else:
            continue
        for t in targets:
            if t in MODULES:
                out |= {t, *parents(t)}
    return out - {name, *parents(name)}


GRAPH = {name: imported(name) for name in MODULES}


def test_no_module_of_the_package_imports_its_former_names():
    offenders = {name: sorted(deps & FORMER) for name, deps in GRAPH.items() if name not in FORMER and deps & FORMER}
    assert offenders == {}


def test_the_package_imports_have_no_circle():
    state, circles = {}, []

    def visit(name, path):
        state[name] = "open"
        for dep in sorted(GRAPH[name]):
            if state.get(dep) == "open":
                circles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_former_names_still_work_for_users():
    code = (
        "import ptmoe.interop.peft_format, ptmoe.adapted as a, ptmoe.base_models as b, ptmoe.model as m, ptmoe.models, ptmoe\n"
        "assert m.PtmoeModel is a.AdaptedModel is ptmoe.PtmoeModel and ptmoe.models is b\n"
        "assert m.context_mask is ptmoe.inputs.context_mask\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr[-2000:]
