"""The source tree's shape beyond what ruff and the import contracts check: no module imports one that imports
it back, even inside a function, and no line runs past 120 characters, pragma comments included."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _related(a: str, b: str) -> bool:
    """A package and a module inside it: the package's ``__init__`` imports its files to register them."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def test_no_import_cycles_even_through_function_level_imports():
    import grimp

    graph = grimp.build_graph("kdforge", exclude_type_checking_imports=True)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if _related(importer, imported):
                continue
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back is not None and not all(_related(x, y) for x, y in zip(back, back[1:])):
                cycles.append(f"{importer} -> {' -> '.join(back)}")
    assert not cycles, "\n".join(cycles)


def test_no_source_line_over_120_characters():
    long = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("src", "tests", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if len(line) > 120
    ]
    assert not long, long
