"""Text-stage constants that must be importable without importing robocrys (~20 s)."""

from __future__ import annotations

from importlib.metadata import version
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


def text_versions() -> dict[str, str]:
    """Library versions the texts depend on (read from package metadata; no robocrys import)."""
    return {"robocrys": version("robocrys"), "pymatgen": version("pymatgen")}
