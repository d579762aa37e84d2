"""The docstring corpus, the same in every process.

Read in a running process, docstrings depend on what it has imported (a library may add methods to another's
classes, or wrap a function and extend its docstring), on its string hashing (a set printed into a message) and on
examples some libraries render with random numbers at import. So the corpus is collected in a fresh Python
process (hash seed 0, only this module imported), without example lines marked ``# may vary`` and without class
attributes defined outside the module's package, and kept in kdforge's cache folder (``KDFORGE_CACHE``, else
``$XDG_CACHE_HOME/kdforge`` or ``~/.cache/kdforge``) under a key of the modules and the versions installed: the
next run reads it instead of importing them all again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kdforge.errors import KdforgeError
from kdforge.files import FileWriteError, read_json, write_json

FORMAT = 1  # the collection's rules: a change here builds a new corpus


def docstring_corpus(modules: Sequence[str]) -> list[str]:
    """The docstrings of ``modules`` (see the module docstring), from the cache or collected afresh."""
    return _cached(f"docstrings-{_key(modules)}.json", modules, _is_corpus)


def docstring_groups(groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """The docstrings of each group of modules (e.g. one group per library), collected in one fresh process and
    cached as :func:`docstring_corpus` is."""
    modules = [name for group in groups for name in group]
    key = _key([json.dumps([list(group) for group in groups]), *modules])
    return _cached(f"docstring-groups-{key}.json", [list(group) for group in groups], _is_groups)


def _is_corpus(found: object) -> bool:
    return isinstance(found, list) and all(isinstance(doc, str) for doc in found)


def _is_groups(found: object) -> bool:
    return isinstance(found, list) and all(_is_corpus(group) for group in found)


def _cached(name: str, wanted: Sequence[object], valid: Callable[[object], bool]) -> Any:
    """What the fresh process collects for ``wanted`` (modules, or groups of them), read from the cache file
    ``name`` when it holds it."""
    path = cache_folder() / name
    if path.is_file():
        try:
            cached = read_json(path, "docstring corpus cache")
            if valid(cached):
                return cached
        except KdforgeError:
            pass  # damaged: collected again and rewritten below
    docs = _collect_in_fresh_process(wanted)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, docs, indent=None)
    except (OSError, FileWriteError):
        pass  # an unwritable cache only costs the next run the collection
    return docs


def cache_folder() -> Path:
    if folder := os.environ.get("KDFORGE_CACHE"):
        return Path(folder)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdforge"


def _key(modules: Sequence[str]) -> str:
    """A digest of the collection's format, the modules, Python's version and the installed distributions'."""
    distributions = importlib.metadata.packages_distributions()
    versions = {}
    for name in sorted({module.split(".")[0] for module in modules}):
        for dist in distributions.get(name, []):
            versions[dist] = importlib.metadata.version(dist)
    text = json.dumps([FORMAT, list(modules), sys.version, versions])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _collect_in_fresh_process(wanted: Sequence[object]) -> Any:
    """:func:`collect` of ``wanted`` modules, or of each group of them (a list of lists), in a fresh process."""
    script = (
        "import json, sys\n"
        "from kdforge.data._docstrings import collect\n"
        "wanted = json.loads(sys.argv[1])\n"
        "grouped = all(isinstance(group, list) for group in wanted)\n"
        "json.dump([collect(group) for group in wanted] if grouped else collect(wanted), sys.stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(wanted))],
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    if done.returncode != 0:
        raise KdforgeError(f"collecting the docstring corpus failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def collect(modules: Sequence[str]) -> list[str]:
    """The docstrings (``inspect.getdoc``) of ``modules``, their public classes, functions and methods, in a
    fixed order; modules that are not installed are skipped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated attributes warn when read
        return [_steady(doc) for doc in _docstrings(modules)]


def _docstrings(modules: Sequence[str]) -> Iterator[str]:
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any import failure means: not available here
            continue
        package = name.split(".")[0]
        objects: list[object] = [module]
        for obj in _public_members(module, package):
            objects.append(obj)
            if inspect.isclass(obj):
                objects += [
                    value
                    for attribute in sorted(vars(obj))
                    if not attribute.startswith("_") and not _added(value := getattr(obj, attribute, None), package)
                ]
        yield from (doc for doc in map(inspect.getdoc, objects) if doc)


def _public_members(module: object, package: str) -> list[object]:
    """Public attributes of ``module`` defined in ``package`` (not re-exported from elsewhere)."""
    members = []
    for attribute in sorted(dir(module)):
        if attribute.startswith("_"):
            continue
        try:
            obj = getattr(module, attribute)
        except Exception:  # noqa: BLE001 - lazy attributes may fail to load
            continue
        if not inspect.ismodule(obj) and str(getattr(obj, "__module__", "") or "").startswith(package):
            members.append(obj)
    return members


def _added(value: object, package: str) -> bool:
    """Whether a class attribute is a function another package added to the class (as transformers adds
    ``warning_once`` to ``logging.Logger`` when it is imported)."""
    module = getattr(value, "__module__", None) if callable(value) else None
    return isinstance(module, str) and not module.startswith(package)


def _steady(doc: str) -> str:
    """``doc`` without the example lines whose output is random (``# may vary``)."""
    return "\n".join(line for line in doc.split("\n") if "# may vary" not in line)
