"""The package's layers import downward only (ARCHITECTURE.md): checked on the source,
function-level imports included, so a shortcut upward cannot creep in unseen."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ase_moireh"

#: the layers, bottom first; a module may import its own layer and those below
LAYERS = [
    ("core", ["basis", "files", "plotting", "data", "factorize", "memory", "neighbours"]),
    ("operators", ["block_operator", "solve"]),
    ("tight binding", ["tightbinding"]),
    ("io", ["io"]),
    (
        "physics",
        ["overlap", "h0", "symmetry", "topology", "ribbon_states", "kpoints", "kpm", "domain"]
        + ["build"],
    ),
    ("model", ["model"]),
    ("tools", ["tools"]),
    ("calculator", ["calculator"]),
    ("cli", ["cli"]),
]
#: imports allowed to go upward, with the reason (keep this empty if at all possible)
ALLOWED: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> int:
    """Layer index of a dotted module name inside ase_moireh."""
    parts = module.split(".")
    if parts[0] != "ase_moireh":
        raise ValueError(module)
    if len(parts) == 1:
        return len(LAYERS)  # the package's __init__ may re-export anything
    for index, (_, rooms) in enumerate(LAYERS):
        if parts[1] in rooms:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and ARCHITECTURE.md")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module imported anywhere in the file, as absolute dotted names."""
    own = module_name(path).split(".")
    package = own if path.name == "__init__.py" else own[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
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
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_downward_only(path):
    assert violations(module_name(path), imports(path)) == []


def test_the_check_catches_upward_and_plugin_imports():
    assert violations("ase_moireh.basis", {"ase_moireh.calculator"})
    assert violations("ase_moireh.io.openmx", {"ase_moireh.model.io"})
    assert violations("ase_moireh.tools.convert", {"ase_moireh_converters.openmx"})
    assert not violations("ase_moireh.calculator", {"ase_moireh.basis", "numpy"})
