"""The floor plan: docs/development.md's layout table names every module, no module imports
itself back through others, no function outgrows a screen, and prompting/'s top level stays small."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "diffprompt"
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, Path]:
    """{dotted name: file} of every module in the package (a package by its __init__)."""
    out = {}
    for f in SRC.rglob("*.py"):
        parts = f.relative_to(SRC.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def layout_rows() -> dict[str, str]:
    """{folder: the row's text} of the layout table, for rows whose first cell is a src/ folder."""
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`(src/diffprompt/(?:[^`]*/)?)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_the_layout_table_names_every_module_in_its_folder_row():
    rows = layout_rows()
    missing = []
    for name, f in modules().items():
        if f.name in ("__init__.py", "__main__.py"):
            continue
        folder = f.parent.relative_to(ROOT).as_posix() + "/"
        if folder not in rows or f"`{f.stem}`" not in rows[folder]:
            missing.append(f"{folder}{f.name}")
    assert not missing, f"docs/development.md's layout table does not name: {missing}"
    stale = [folder for folder in rows if not (ROOT / folder).is_dir()]
    assert not stale, f"the layout table names folders that do not exist: {stale}"


def imports_of(name: str, f: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its file (lazy imports included)."""
    package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in known]
            out |= set(subs) if subs else ({target} if target in known else set())
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
    return out - {name}


def test_no_module_imports_itself_back_through_others():
    known = modules()
    graph = {name: imports_of(name, f, known) for name, f in known.items()}
    circles = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        for nxt in graph[node]:
            if nxt in path:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done:
                visit(nxt, path + [nxt], done)
        done.add(node)

    done: set[str] = set()
    for name in graph:
        if name not in done:
            visit(name, [name], done)
    # a package's __init__ that re-exports its modules is not a circle with them
    circles = [c for c in circles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert not circles, f"import circles: {circles[:5]}"


def test_no_function_is_longer_than_a_screen():
    long = []
    for f in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_prompting_top_level_holds_at_most_ten_entries():
    entries = [p.name for p in (SRC / "prompting").iterdir() if p.name != "__pycache__"]
    assert len(entries) <= 10, sorted(entries)


def test_every_lazily_exported_name_imports():
    """The packages' faces (`from diffprompt.prompting import ...`) name only what exists."""
    import importlib

    for f in SRC.rglob("__init__.py"):
        if "lazy_exports" not in f.read_text(encoding="utf-8"):
            continue
        package = importlib.import_module(".".join(f.relative_to(SRC.parent).parent.parts))
        for name in package.__all__:
            assert getattr(package, name) is not None, (package.__name__, name)


def test_prompting_layers_import_downwards_only():
    """prompts/ and models/ know nothing of runs or comparisons; run/ nothing of comparisons; the
    method registry (read by the CLI at import) imports only the torch-free option names."""
    known = modules()
    above = {"prompts": ("run", "comparison", "methods"), "models": ("run", "comparison", "methods"),
             "methods": ("run", "comparison", "models"), "run": ("comparison",)}
    for name, f in known.items():
        parts = name.split(".")
        if len(parts) < 4 or parts[1] != "prompting" or parts[2] not in above:
            continue
        for target in imports_of(name, f, known):
            tparts = target.split(".")
            assert not (len(tparts) > 2 and tparts[1] == "prompting" and tparts[2] in above[parts[2]]), (name, target)
    registry = imports_of("diffprompt.prompting.methods.registry", known["diffprompt.prompting.methods.registry"], known)
    assert registry <= {"diffprompt.errors", "diffprompt.prompting.methods", "diffprompt.prompting.methods.checks"}
