"""Defer pymatgen's AFLOW prototype library load until something actually reads it.

Importing robocrys imports ``pymatgen.analysis.prototypes``, whose ``_data`` module deserialises
the whole AFLOW prototype library (288 structures, ~2.5 s of each worker's start-up) into
``AFLOW_PROTOTYPE_LIBRARY``. robocrys never reads it: its ``ReducedAflowPrototypeMatcher`` uses
robocrys' own mineral database. :func:`install` loads ``_data`` from pymatgen's own source with
that one assignment replaced by a :class:`LazyLoadedList` (which loads the same file with the same
``loadfn`` on first use); everything else in the module runs unchanged. If the source line is not
found (another pymatgen version), or ``_data`` is already imported, nothing is changed; nor
when the installed versions are not the verified ones
(:func:`matfuse.text.settings.fast_paths_verified`, checked first).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

_NAME = "pymatgen.analysis.prototypes._data"
_LINE = 'AFLOW_PROTOTYPE_LIBRARY = loadfn(f"{MODULE_DIR}/aflow_prototypes.json.gz")'
_LAZY_LINE = 'AFLOW_PROTOTYPE_LIBRARY = _matfuse_lazy_list(f"{MODULE_DIR}/aflow_prototypes.json.gz")'


class LazyLoadedList:
    """List-like view of ``monty.serialization.loadfn(path)``, loaded on first access.

    Deliberately not a ``list`` or ``collections.abc.Sequence`` subclass, so consumers such as
    ``pandas.DataFrame(obj)`` convert it with ``list(obj)`` (through :meth:`__iter__`).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._data: list[Any] | None = None

    def _load(self) -> list[Any]:
        if self._data is None:
            from monty.serialization import loadfn

            self._data = list(loadfn(self._path))
        return self._data

    def __iter__(self) -> Iterator[Any]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def __getitem__(self, index: Any) -> Any:
        return self._load()[index]

    def __contains__(self, item: Any) -> bool:
        return item in self._load()

    def __eq__(self, other: object) -> bool:
        return self._load() == (other._load() if isinstance(other, LazyLoadedList) else other)

    __hash__ = None  # type: ignore[assignment]  # like list

    def __getattr__(self, name: str) -> Any:  # list methods (copy, index, count, ...)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._load(), name)

    def __repr__(self) -> str:
        state = "loaded" if self._data is not None else "not loaded"
        return f"LazyLoadedList({self._path!r}, {state})"


def install() -> bool:
    """Pre-load ``pymatgen.analysis.prototypes._data`` with the lazy library. True if installed.

    Does nothing (False) unless the installed versions are the verified ones (version gate).
    """
    from matfuse.text.settings import fast_paths_verified

    if not fast_paths_verified(warn=False):
        return False
    if _NAME in sys.modules:
        return False
    spec = importlib.util.find_spec("pymatgen")  # not find_spec(_NAME): that imports the package
    if spec is None or not spec.submodule_search_locations:
        return False
    path = Path(next(iter(spec.submodule_search_locations))) / "analysis" / "prototypes" / "_data.py"
    try:
        source = path.read_text(encoding="utf-8")
    except OSError:
        return False
    if source.count(_LINE) != 1:
        log.debug("pymatgen %s differs from the expected source; AFLOW library loads eagerly", path)
        return False
    mod_spec = importlib.util.spec_from_file_location(_NAME, path)
    if mod_spec is None:
        return False
    module = importlib.util.module_from_spec(mod_spec)
    module.__dict__["_matfuse_lazy_list"] = LazyLoadedList
    exec(compile(source.replace(_LINE, _LAZY_LINE), str(path), "exec"), module.__dict__)  # noqa: S102
    sys.modules[_NAME] = module
    return True
