"""How the package's modules import one another: never through the former names kept for users
(`ptmoe.model`, `ptmoe.models`), without a circle, counting the imports inside functions too (a circle
there only waits for the first call to bite), and in the layers docs/architecture.md draws: nothing below
the commands imports one, nothing in config/ imports training/, the adapter's core imports no command,
experiment, training, evaluation or server code and of interop only the PEFT folder reader (the page says
why); an import inside a function says why it is there (a comment on the line above the function's first
import, or on the import). No file of the package is over 330 lines."""

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


def test_the_former_names_still_work_for_users_and_warn_once_naming_the_new_import():
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    import ptmoe.interop.peft_format, ptmoe.adapted as a, ptmoe.base_models as b, ptmoe\n"
        "    import ptmoe.model as m, ptmoe.models\n"
        "    import ptmoe.model, ptmoe.models\n"
        "    assert m.PtmoeModel is a.AdaptedModel is ptmoe.PtmoeModel is ptmoe.PtmoeModel and ptmoe.models is b\n"
        "    assert m.context_mask is ptmoe.inputs.context_mask\n"
        "for w in seen:\n"
        "    print(w.category.__name__, '|', w.message)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr[-2000:]
    ours = [line for line in out.stdout.splitlines() if "ptmoe" in line]
    assert len(ours) == 3, out.stdout  # one per former name, however often it is used
    assert all(line.startswith("DeprecationWarning | ") for line in ours), ours
    for former, new in [
        ("ptmoe.model ", "ptmoe.adapted"),
        ("ptmoe.models ", "ptmoe.base_models"),
        ("PtmoeModel", "AdaptedModel"),
    ]:
        assert any(former in line and new in line for line in ours), (former, ours)


BELOW_THE_COMMANDS = [
    n for n in MODULES if not n.startswith("ptmoe.recipes") and n not in ("ptmoe.cli", "ptmoe.__main__")
]


def test_nothing_below_the_commands_imports_a_command():
    offenders = {n: sorted(d for d in GRAPH[n] if d.startswith("ptmoe.recipes")) for n in BELOW_THE_COMMANDS}
    assert {n: d for n, d in offenders.items() if d} == {}
    assert all(n in GRAPH for n in ("ptmoe.interop.lm_eval_model", "ptmoe.training.loop", "ptmoe.experiments.store"))


def test_persistence_does_not_depend_on_interop():
    assert sorted(d for d in GRAPH["ptmoe.persistence"] if d.startswith("ptmoe.interop")) == []


def test_no_file_of_the_package_is_over_330_lines():
    long = {str(p.relative_to(SRC)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > 330}
    assert long == {}


CORE = ["ptmoe.adapted", "ptmoe.persistence", *(n for n in MODULES if n.startswith("ptmoe.methods"))]
ABOVE_THE_CORE = ("ptmoe.recipes", "ptmoe.experiments", "ptmoe.training", "ptmoe.evaluation", "ptmoe.serving")
CORE_INTEROP = {"ptmoe.adapted": {"ptmoe.interop", "ptmoe.interop.peft_format"}}  # from_pretrained reads PEFT folders


def test_config_imports_nothing_of_training():
    offenders = {n: sorted(d for d in GRAPH[n] if d.startswith("ptmoe.training")) for n in MODULES}
    assert {n: d for n, d in offenders.items() if d and n.startswith("ptmoe.config")} == {}


def test_the_adapter_core_imports_no_layer_above_it():
    above = {n: sorted(d for d in GRAPH[n] if d.startswith(ABOVE_THE_CORE) or d == "ptmoe.cli") for n in CORE}
    assert {n: d for n, d in above.items() if d} == {}
    interop = {n: {d for d in GRAPH[n] if d.startswith("ptmoe.interop")} - CORE_INTEROP.get(n, set()) for n in CORE}
    assert {n: d for n, d in interop.items() if d} == {}


NOT_YET_HELD = ()


def test_every_import_inside_a_function_says_why():
    """Imports belong at the top of the module; one inside a function (a slow or optional dependency, a
    command that must start without torch) carries a comment saying so."""
    silent = []
    for name, path in MODULES.items():
        if name.startswith(NOT_YET_HELD):
            continue
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            imports = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
            inner = {id(n) for f in ast.walk(fn) if f is not fn and isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
            imports = sorted((n for n in imports if id(n) not in inner), key=lambda n: n.lineno)
            if not imports:
                continue
            first = imports[0].lineno
            if "#" not in lines[first - 1] and not lines[first - 2].strip().startswith("#"):
                silent.append(f"{path.relative_to(SRC)}:{first}")
    assert silent == [], f"{len(silent)} functions import without saying why: {silent[:10]}"
