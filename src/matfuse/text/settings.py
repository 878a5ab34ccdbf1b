"""Text-stage constants and the fast-path version gate (importable without robocrys, ~20 s).

Version gate
------------
The exact fast paths (:mod:`matfuse.text.fastpaths`, :mod:`~matfuse.text.mineral`,
:mod:`~matfuse.text.lazy_prototypes`, :mod:`~matfuse.text.fastnumpy`) copy private method bodies
of robocrys, patch module globals of robocrys and pymatgen, re-execute pymatgen source with one
line replaced, and replicate numpy's arithmetic. They were verified byte-identical to stock
robocrys (``tests/test_text_fastpaths.py`` against ``tests/data/robocrys_stock_texts.json.gz``)
for exactly the versions in :data:`VERIFIED_VERSIONS`. :func:`fast_paths_verified` compares them
with the installed distributions (package metadata, no import); with any other version the fast
paths are not applied at all (nothing is patched or even imported) and texts come from stock
robocrys, with one :class:`UnverifiedVersionsWarning` per process.

To verify other versions: install them, regenerate the reference with stock robocrys
(``tests/data/make_robocrys_reference.py``), set :data:`VERIFIED_VERSIONS` to the versions it
records, and run ``pytest tests/test_text_fastpaths.py`` (it fails unless the two agree).
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

VARIANTS = ("all", "key", "single")
#: Bump when the definition of a variant changes (part of the cache key).
TEXT_FORMAT_VERSION = 1
#: Settings that determine the texts (part of the cache key). Robocrys defaults throughout.
TEXT_SETTINGS: dict[str, Any] = {
    "format_version": TEXT_FORMAT_VERSION,
    "condenser": "StructureCondenser() defaults, offline MoleculeNamer",
    "describer": "StructureDescriber() defaults, return_parts=True",
    "key": "mineral part + bond-length sentences",
    "single": "mineral part",
}

#: Distributions whose code produces the texts (robocrys and what it runs: pymatgen, whose
#: ``pymatgen.core`` is the separate ``pymatgen-core`` distribution, matminer's fingerprints,
#: spglib's symmetry). All are part of the text cache key (:func:`text_versions`).
TEXT_DISTRIBUTIONS = ("robocrys", "pymatgen", "pymatgen-core", "matminer", "spglib")

#: Versions the fast paths were verified against (byte-identical texts). ``numpy`` is here
#: because :mod:`matfuse.text.fastnumpy` replicates numpy's own ``cross`` / ``linalg.norm``
#: arithmetic. Keep equal to the ``versions`` of tests/data/robocrys_stock_texts.json.gz.
VERIFIED_VERSIONS: dict[str, str] = {
    "robocrys": "0.2.13",
    "pymatgen": "2026.10.24",
    "pymatgen-core": "2026.10.16",
    "matminer": "0.10.1",
    "spglib": "2.8.0",
    "numpy": "2.4.6",
}


class UnverifiedVersionsWarning(UserWarning):
    """Installed robocrys/pymatgen/... differ from :data:`VERIFIED_VERSIONS`: stock robocrys is used."""


def _distribution_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def installed_versions() -> dict[str, str | None]:
    """Installed version of every distribution in :data:`TEXT_DISTRIBUTIONS` and
    :data:`VERIFIED_VERSIONS` (``None`` if not installed); package metadata, no import."""
    names = dict.fromkeys([*TEXT_DISTRIBUTIONS, *VERIFIED_VERSIONS])
    return {name: _distribution_version(name) for name in names}


def text_versions() -> dict[str, str | None]:
    """Versions of every distribution that can change a text (part of the text cache key).

    The key deliberately does not record whether the fast paths were on: they are exact
    (byte-identical to stock robocrys, enforced by the version gate and its test), so texts made
    with and without them are interchangeable and share one cache.
    """
    installed = installed_versions()
    return {name: installed[name] for name in TEXT_DISTRIBUTIONS}


def unverified_versions() -> dict[str, tuple[str | None, str]]:
    """``{distribution: (installed, verified)}`` for each that differs from :data:`VERIFIED_VERSIONS`."""
    installed = installed_versions()
    return {name: (installed.get(name), want) for name, want in VERIFIED_VERSIONS.items() if installed.get(name) != want}


_warned = False


def fast_paths_verified(warn: bool = True) -> bool:
    """Whether the installed versions are the verified ones (the fast paths may be applied).

    Must be asked before any fast path is applied or imported. When they differ and ``warn`` is
    set, issues one :class:`UnverifiedVersionsWarning` per process naming each difference.
    """
    global _warned
    diff = unverified_versions()
    if not diff:
        return True
    if warn and not _warned:
        _warned = True
        what = ", ".join(f"{name} {have or 'not installed'} (verified: {want})" for name, (have, want) in diff.items())
        warnings.warn(
            f"text.fast_paths disabled: installed {what} differ from the versions the exact robocrys fast "
            "paths were verified against (matfuse.text.settings.VERIFIED_VERSIONS); using stock (slower) "
            "robocrys instead, which gives stock robocrys texts",
            UnverifiedVersionsWarning,
            stacklevel=2,
        )
    return False
