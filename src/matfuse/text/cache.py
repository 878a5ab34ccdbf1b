"""Per-structure cache of Robocrystallographer texts.

One small JSON file per structure, ``<cache_dir>/<key[:2]>/<key>.json``, where ``key`` hashes the
entry's ``structure_hash``, the robocrys and pymatgen versions and the variant settings
(:data:`matfuse.text.robocrys_text.TEXT_SETTINGS`). Files are written atomically, so a cache dir
can be shared by concurrent jobs and datasets; a corrupt or mismatching file counts as a miss.
Only successful descriptions are cached (failures, e.g. timeouts, are retried on reruns).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from matfuse.io import write_text

log = logging.getLogger(__name__)


def cache_salt() -> str:
    """Everything besides the structure that determines the texts (no robocrys import)."""
    from matfuse.text.settings import TEXT_SETTINGS, text_versions

    return json.dumps({"versions": text_versions(), "settings": TEXT_SETTINGS}, sort_keys=True)


class TextCache:
    """Read/write cached ``{"all", "key", "single"}`` texts keyed by structure hash."""

    def __init__(self, root: str | Path, salt: str | None = None) -> None:
        self.root = Path(root)
        self.salt = cache_salt() if salt is None else salt

    def key(self, structure_hash: str) -> str:
        return hashlib.sha256(f"{self.salt}\n{structure_hash}".encode()).hexdigest()[:40]

    def path(self, structure_hash: str) -> Path:
        key = self.key(structure_hash)
        return self.root / key[:2] / f"{key}.json"

    def get(self, structure_hash: str) -> dict[str, str] | None:
        """The cached texts, or ``None`` on a miss (missing, unreadable or foreign file)."""
        path = self.path(structure_hash)
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable text cache file %s: %s", path, exc)
            return None
        if data.get("structure_hash") != structure_hash or data.get("salt") != self.salt:
            return None
        texts = data.get("texts")
        if not isinstance(texts, dict) or not all(isinstance(texts.get(v), str) for v in ("all", "key", "single")):
            return None
        return {v: texts[v] for v in ("all", "key", "single")}

    def put(self, structure_hash: str, texts: dict[str, str], seconds: float) -> None:
        record = {"structure_hash": structure_hash, "salt": self.salt, "texts": texts, "seconds": seconds}
        write_text(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n", self.path(structure_hash))
