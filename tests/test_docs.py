"""The README and docs say what the code does: every Python snippet's imports import,
every ``ase_moireh.`` name resolves, every path exists, every ``moireh`` command line
names a real command and real options, and the README's two commands stay as CI runs
them."""

import ast
import importlib
import re
import shlex
from pathlib import Path

import click
import pytest

from ase_moireh.cli import moireh, moireh_convert

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
IDS = [str(p.relative_to(ROOT)) for p in PAGES]
MAIN_JOB = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[relax]' && .venv/bin/moireh -v demo "
    "-o moireh-demo"
)
TESTS = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
PROGRAMS = ("moireh", "moireh-convert")
#: names that look like modules but are not: the converter plugins' entry-point group
NOT_MODULES = {"ase_moireh.converters"}


def blocks(page: Path, language: str) -> list[str]:
    """The fenced code blocks of one language in a Markdown page."""
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), flags=re.S)


def test_readme_keeps_the_two_commands_and_ci_runs_the_tests_one():
    readme = (ROOT / "README.md").read_text()
    assert MAIN_JOB in blocks(ROOT / "README.md", "bash")[0]
    assert TESTS in blocks(ROOT / "README.md", "bash")[1]
    assert 'pytest -m "not slow"' in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert TESTS.replace("python3 -m venv .venv && ", "") in ci
    assert len(command_lines(ROOT / "README.md")) > 10  # the command-line check sees them


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_python_snippets_import(page):
    """The import lines of every Python snippet run (the rest may need data files)."""
    for snippet in blocks(page, "python"):
        tree = ast.parse(snippet)
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        code = compile(ast.Module(body=imports, type_ignores=[]), str(page), "exec")
        exec(code, {})


def resolves(name: str) -> bool:
    """A dotted name is a module, or an attribute reached from the longest module."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attribute in parts[i:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_dotted_name_resolves(page):
    names = set(re.findall(r"\base_moireh(?:\.[A-Za-z_]\w*)+", page.read_text()))
    assert not [n for n in sorted(names - NOT_MODULES) if not resolves(n)]


PATH = re.compile(
    r"`((?:ase_moireh|tests|benchmarks|examples|docs|converters|data|results)/[^`\s]*)`"
)


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_path_exists(page):
    missing = []
    for path in set(PATH.findall(page.read_text())):
        path = path.split(":")[0].rstrip(",.")
        if path.startswith("results/"):  # as the benchmark pages name their outputs
            path = "benchmarks/" + path
        if not any(ROOT.glob(path)):
            missing.append(path)
    assert not sorted(missing)


def command_lines(page: Path) -> list[list[str]]:
    """Every ``moireh`` / ``moireh-convert`` call in the page's shell snippets, as words
    from the program name on (comments, prefixes and mpirun dropped)."""
    out = []
    for snippet in blocks(page, "bash"):
        for line in snippet.splitlines():
            line = line.split(" #")[0]
            for part in line.split("&&"):
                words = shlex.split(part)
                at = [
                    i for i, w in enumerate(words) if Path(w).name in ("moireh", "moireh-convert")
                ]
                if at:
                    out.append([Path(words[at[0]]).name, *words[at[0] + 1 :]])
    return out


def options_of(command: click.Command) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_command_line_names_real_commands_and_options(page):
    for words in command_lines(page):
        command = moireh_convert if words[0] == "moireh-convert" else moireh
        rest = words[1:]
        allowed = options_of(command)
        while isinstance(command, click.Group) and rest:
            if rest[0].startswith("-"):  # group options (moireh -v ...)
                assert rest[0] in allowed, (words, rest[0])
                rest = rest[1:]
                continue
            assert rest[0] in command.commands, (words, rest[0])
            command = command.commands[rest[0]]
            allowed = options_of(command)
            rest = rest[1:]
        unknown = [w.split("=")[0] for w in rest if w.startswith("--")]
        assert not [w for w in unknown if w not in allowed], words
