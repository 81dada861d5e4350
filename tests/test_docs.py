"""The documentation holds together: a short README, no reference to a file that does not exist,
no broken link between the pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_LIMIT = 15_000

# The pages whose links must resolve, and the text in which every `docs/...` or `benchmarks/...`
# path must name a file or folder of the repository.
PAGES = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TEXT_SUFFIXES = {".py", ".md", ".toml", ".json", ".txt", ".cfg", ".sh"}

# A path starts a word (not inside `src/diffprompt/docs/...` or a URL) and runs over the characters
# paths use here, brace lists (`{json,md}`) and globs (`*.md`) included.
PATH_RE = re.compile(r"(?<![\w./~$-])((?:docs|benchmarks)/[\w./*{},-]*)")
LINK_RE = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def scanned_files() -> list[Path]:
    """The source, test and documentation files that may name a path (no caches, no egg-info)."""
    found = list(PAGES)
    for folder in ("src", "tests"):
        for path in sorted((ROOT / folder).rglob("*")):
            skip = any(part == "__pycache__" or part.endswith(".egg-info") for part in path.parts)
            skip = skip or path == Path(__file__).resolve()  # this file's examples name missing paths on purpose
            if path.is_file() and path.suffix in TEXT_SUFFIXES and not skip:
                found.append(path)
    return found


def expand_braces(path: str) -> list[str]:
    """`a.{json,md}` -> [`a.json`, `a.md`] (one level of braces, as the docs write them)."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    head, tail = path[: match.start()], path[match.end():]
    return [p for option in match.group(1).split(",") for p in expand_braces(head + option + tail)]


def path_exists(path: str) -> bool:
    """A file, folder or glob match; an output stem (`--out benchmarks/results/x`) names `x.*`."""
    if any(c in path for c in "*?["):
        return any(ROOT.glob(path))
    target = ROOT / path
    return target.exists() or any(target.parent.glob(target.name + ".*"))


def mentioned_paths(text: str) -> list[str]:
    """Every `docs/...` / `benchmarks/...` path in a text, trailing punctuation and braces expanded."""
    paths = []
    for raw in PATH_RE.findall(text):
        raw = raw.rstrip(".,:;")
        if raw.count("{") != raw.count("}"):  # a brace list cut by the regex: keep the part before it
            raw = raw[: raw.index("{")]
        paths.extend(p.rstrip(".,") for p in expand_braces(raw))
    return paths


def missing_paths(files: list[Path]) -> list[str]:
    missing = []
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace")
        for path in mentioned_paths(text):
            if not path_exists(path):
                missing.append(f"{file.relative_to(ROOT)}: {path}")
    return missing


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {github_anchor(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def broken_links(page: Path) -> list[str]:
    """Relative links and images of one page whose file (or, into a Markdown page, heading) is missing."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK_RE.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # http(s), mailto: and in-page anchors
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve()
        if not resolved.exists():
            broken.append(f"{page.name}: {target} (no such file)")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{page.name}: {target} (no such heading)")
    return broken


def test_readme_is_short():
    size = len((ROOT / "README.md").read_text(encoding="utf-8"))
    assert size < README_LIMIT, f"README.md has {size} characters; move details into docs/"


def test_the_docs_pages_exist():
    for name in ("diffusion", "prompting", "data", "development"):
        assert (ROOT / "docs" / f"{name}.md").is_file()
    assert (ROOT / "benchmarks" / "README.md").is_file()


def test_every_named_docs_or_benchmarks_path_exists():
    missing = missing_paths(scanned_files())
    assert not missing, "named but missing:\n" + "\n".join(missing)


def test_every_relative_link_resolves():
    broken = [b for page in PAGES for b in broken_links(page)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_path_helpers_catch_what_they_should():
    assert mentioned_paths("see docs/readme/data.md.") == ["docs/readme/data.md"]
    assert mentioned_paths("`benchmarks/results/x.{json,md}`") == ["benchmarks/results/x.json", "benchmarks/results/x.md"]
    assert mentioned_paths("src/diffprompt/docs/a.md and https://example.org/docs/b") == []
    assert not path_exists("docs/readme/data.md")
    assert path_exists("benchmarks/results/diffusion_speed")  # an output stem: diffusion_speed.{json,md}
    assert github_anchor("## Diffusion speed: our U-Net against diffusers".lstrip("# ")) == \
        "diffusion-speed-our-u-net-against-diffusers"


@pytest.mark.parametrize("link, kind", [("](img/nope.png)", "no such file"),
                                        ("](diffusion.md#no-such-heading)", "no such heading")])
def test_a_broken_link_is_caught(tmp_path, link, kind):
    (tmp_path / "diffusion.md").write_text((ROOT / "docs" / "diffusion.md").read_text(encoding="utf-8"))
    page = tmp_path / "page.md"
    page.write_text(f"[fine](diffusion.md#the-shipped-checkpoints) [broken{link}\n", encoding="utf-8")
    assert [kind in b for b in broken_links(page)] == [True]


def test_every_import_line_in_the_docs_imports():
    """Each `from diffprompt... import ...` line of README.md, docs/ and benchmarks/README.md names
    a module and names that exist (modules move; the docs must follow)."""
    import importlib
    import importlib.util

    pages = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")]
    lines = {m.group(1, 2) for page in pages
             for m in re.finditer(r"^\s*from (diffprompt[\w.]*) import ([\w, ]+)", page.read_text(encoding="utf-8"), re.M)}
    assert len(lines) >= 5
    for module, names in sorted(lines):
        imported = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",") if n.strip()):
            assert hasattr(imported, name) or importlib.util.find_spec(f"{module}.{name}"), (module, name)


FIGURES_MARK = re.compile(r"<!-- figures: ((?:benchmarks/)?results/[\w.-]+\.md) -->")  # from the root or the page


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of `text` as rows of stripped cells (the header first, the rule dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def cells_by_row_and_column(table: list[list[str]]) -> dict[tuple[str, str], str]:
    header = [h.lower() for h in table[0]]
    assert len(set(header)) == len(header), f"two columns share a name, so a cell cannot be found by it: {header}"
    return {(row[0].lower().strip("*"), header[j]): cell.strip("*") for row in table[1:] for j, cell in enumerate(row) if j}


def test_every_marked_table_quotes_its_results_file():
    """A table after `<!-- figures: benchmarks/results/X.md -->` copies figures from that file: each
    of its cells equals the results table's cell of the same row label and column (case aside)."""
    checked = 0
    for page in [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for mark in FIGURES_MARK.finditer(text):
            quoted = markdown_tables(text[mark.end():])[0]
            source = {}
            results = ROOT / mark.group(1) if mark.group(1).startswith("benchmarks/") else page.parent / mark.group(1)
            for table in markdown_tables(results.read_text(encoding="utf-8")):
                source.update(cells_by_row_and_column(table))
            for key, cell in cells_by_row_and_column(quoted).items():
                assert source.get(key) == cell, (page.name, mark.group(1), key, cell, source.get(key))
                checked += 1
    assert checked >= 100  # the README's and docs' prompting tables and the README's diffusion table are marked


def test_a_changed_figure_is_caught():
    table = markdown_tables("| method | MR |\n| --- | ---: |\n| prompt-ft | 59.4 (0.3) |\n")[0]
    assert cells_by_row_and_column(table) == {("prompt-ft", "mr"): "59.4 (0.3)"}
    assert cells_by_row_and_column(table) != {("prompt-ft", "mr"): "59.5 (0.3)"}


def readme_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_snippets_run_as_written(monkeypatch):
    """A user pastes them: each runs, and the prompt snippet predicts what its comment says."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snippets = readme_snippets()
    assert len(snippets) == 2
    diffusion_ns: dict = {}
    exec(compile(snippets[0], "README.md (diffusion)", "exec"), diffusion_ns)
    assert diffusion_ns["samples"].shape == (4, 1, 28, 28) and diffusion_ns["bpd"].shape == (2,)
    prompt_ns: dict = {}
    exec(compile(snippets[1], "README.md (prompting)", "exec"), prompt_ns)
    assert "tensor([1, 0])" in snippets[1]
    assert prompt_ns["clf"].predict(["a gorgeous, witty, seductive movie .", "a boring mess ."]).tolist() == [1, 0]
