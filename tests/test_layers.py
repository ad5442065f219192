"""The package's layers import downward only (ARCHITECTURE.md): checked on the source,
function-level imports included, so a shortcut upward cannot creep in unseen. Imports
under ``if TYPE_CHECKING:`` are annotations, never executed, and are not counted."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ase_moireh"

#: the layers, bottom first; a module may import its own layer and those below
LAYERS = [
    ("core", ["basis", "files", "plotting", "data", "memory", "neighbours"]),
    ("solvers", ["solvers"]),
    ("operators", ["block_operator"]),
    ("tight binding", ["tightbinding"]),
    ("io", ["io"]),
    (
        "physics",
        ["overlap", "h0", "symmetry", "topology", "ribbon_states", "kpoints", "bands"]
        + ["metrics", "domain", "build"],
    ),
    ("model", ["model"]),
    ("jobs", ["training", "workflows"]),
    ("calculator", ["calculator"]),
    ("cli", ["cli"]),
]
#: rooms of one layer that must not import each other (independent jobs)
INDEPENDENT = {"training", "workflows"}
#: imports allowed to go upward, with the reason (keep this empty if at all possible)
ALLOWED: dict[tuple[str, str], str] = {}
#: layers whose modules never load torch (an MPI rank reading a streamed file, the
#: OpenMX campaign, file conversion): every layer below the model, and the workflows
TORCH_FREE_LAYERS = {"core", "solvers", "operators", "tight binding", "io", "physics"}
TORCH_FREE_ROOMS = {"workflows"}


def room_of(module: str) -> str:
    """The room (top-level module or package inside ase_moireh) of a dotted name."""
    parts = module.split(".")
    if parts[0] != "ase_moireh":
        raise ValueError(module)
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int:
    """Layer index of a dotted module name inside ase_moireh."""
    room = room_of(module)
    if not room:
        return len(LAYERS)  # the package's __init__ may re-export anything
    for index, (_, rooms) in enumerate(LAYERS):
        if room in rooms:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and ARCHITECTURE.md")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_nodes(tree: ast.AST):
    """Every node of the tree except those under ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                todo.extend(child.orelse)  # the else branch runs
            else:
                todo.append(child)


def imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file, as absolute dotted names."""
    return imports_of(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_of(text: str, module: str, is_package: bool = False) -> set[str]:
    """Every module the source ``text`` of ``module`` imports at run time."""
    own = module.split(".")
    package = own if is_package else own[:-1]
    found = set()
    for node in _runtime_nodes(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_layer():
    for path in SOURCES:
        layer_of(module_name(path))


def test_every_package_names_its_public_api():
    """Each package has an ``__init__.py`` with ``__all__``, and every name in it is
    defined or imported there."""
    for folder in sorted(p for p in PACKAGE.iterdir() if p.is_dir() and any(p.glob("*.py"))):
        init = folder / "__init__.py"
        assert init.is_file(), f"{folder.name}/ has no __init__.py"
        if folder.name in ("cli", "data"):  # commands and file paths, no API of objects
            continue
        tree = ast.parse(init.read_text())
        names: set[str] = set()
        exported: list[str] | None = None
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                names.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.FunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                exported = ast.literal_eval(node.value)
        assert exported, f"{folder.name}/__init__.py has no __all__"
        assert set(exported) <= names, set(exported) - names
        shadowed = set(exported) & {p.stem for p in folder.glob("*.py")}
        assert not shadowed, f"{folder.name}: names that hide submodules {shadowed}"


def violations(mod: str, deps: set[str]) -> list[str]:
    """What is wrong with ``mod`` importing ``deps``."""
    own = layer_of(mod)
    out = []
    for dep in sorted(deps):
        if dep.startswith("ase_moireh_converters"):
            out.append(
                f"{mod} imports the converter plugins ({dep}): the library finds plugins "
                "through entry points (ase_moireh.io.plugins), never by name"
            )
        elif dep.startswith("ase_moireh") and (mod, dep) not in ALLOWED:
            if layer_of(dep) > own:
                out.append(f"{mod} imports {dep}, which is in a layer above it")
            elif {room_of(mod), room_of(dep)} <= INDEPENDENT and room_of(mod) != room_of(dep):
                out.append(f"{mod} imports {dep}: the two jobs are independent")
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_downward_only(path):
    assert violations(module_name(path), imports(path)) == []


def test_the_check_catches_upward_and_plugin_imports():
    assert violations("ase_moireh.basis", {"ase_moireh.calculator"})
    assert violations("ase_moireh.io.openmx", {"ase_moireh.model.io"})
    assert violations("ase_moireh.solvers.kpm", {"ase_moireh.tightbinding"})
    assert violations("ase_moireh.workflows.convert", {"ase_moireh_converters.openmx"})
    assert violations("ase_moireh.training.trainer", {"ase_moireh.workflows.convert"})
    assert not violations("ase_moireh.calculator", {"ase_moireh.basis", "numpy"})
    assert not violations("ase_moireh.training.trainer", {"ase_moireh.training.losses"})


def test_type_checking_imports_are_not_counted():
    source = PACKAGE / "solvers" / "kpm.py"
    assert "TYPE_CHECKING" in source.read_text()
    assert "ase_moireh.tightbinding" not in imports(source)
    text = "import typing\nif typing.TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
    assert imports_of(text, "ase_moireh.x") == {"typing", "b"}
    assert imports_of("from . import y\nfrom .z import w\n", "ase_moireh.io.x") == {
        "ase_moireh.io",
        "ase_moireh.io.z",
    }


def test_the_demo_reads_model_history_without_the_trainer():
    found = imports(PACKAGE / "cli" / "demo.py")
    assert not any(room_of(m) == "training" for m in found if m.startswith("ase_moireh."))


def test_layers_below_the_model_never_load_torch():
    """Import every module of the torch-free layers in a fresh interpreter: torch stays
    unloaded (each MPI rank of a distributed solve imports io.pencil)."""
    free = [
        module_name(p)
        for p in SOURCES
        if room_of(module_name(p)) in TORCH_FREE_ROOMS
        or (room_of(module_name(p)) and LAYERS[layer_of(module_name(p))][0] in TORCH_FREE_LAYERS)
    ]
    assert "ase_moireh.io.pencil" in free and "ase_moireh.solvers.distributed" in free
    code = "import importlib, sys\n"
    code += "".join(f"importlib.import_module({m!r})\n" for m in free)
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'e3nn')))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
