"""Per-structure cache of Robocrystallographer texts.

One small JSON file per structure, ``<cache_dir>/<key[:2]>/<key>.json``, where ``key`` hashes the
entry's ``structure_hash``, the versions of every library that can change a text (robocrys,
pymatgen, pymatgen-core, matminer, spglib: :func:`matfuse.text.settings.text_versions`) and the
variant settings (:data:`matfuse.text.settings.TEXT_SETTINGS`). Whether robocrys' exact fast paths
were on is not part of the key: they give byte-identical texts, so records are shared. Files are written atomically, so a cache dir
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

#: The text variants every cache record holds.
VARIANTS = ("all", "key", "single")


def cache_salt() -> str:
    """Everything besides the structure that determines the texts (no robocrys import)."""
    from matfuse.text.settings import TEXT_SETTINGS, text_versions

    return json.dumps({"versions": text_versions(), "settings": TEXT_SETTINGS}, sort_keys=True)


def _utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (JSON may decode lone surrogates like ``\\ud800``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _record_problem(data: Any, structure_hash: str, salt: str) -> str:
    """Why a decoded cache file is not a usable record for ``structure_hash`` ('' when it is)."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    if data.get("structure_hash") != structure_hash:
        return "record of another structure"
    if data.get("salt") != salt:
        return "written with other robocrys/pymatgen/matminer/spglib versions or text settings"
    texts = data.get("texts")
    if not isinstance(texts, dict):
        return f"'texts' is a JSON {type(texts).__name__}, not an object"
    bad = [v for v in VARIANTS if not isinstance(texts.get(v), str) or not _utf8(texts[v])]
    if bad:
        return f"texts {bad} missing or not UTF-8 strings"
    return ""


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
        """The cached texts, or ``None`` on a miss (missing, unreadable or foreign file).

        Whatever the file holds never raises: invalid JSON, JSON that is not an object, another
        structure's or settings' record, or texts that are not three UTF-8 strings count as a
        miss, logged as a warning naming the file and why (the entry is then described again and
        the file rewritten).
        """
        path = self.path(structure_hash)
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            log.warning("ignoring unreadable text cache file %s: %s", path, exc)
            return None
        why = _record_problem(data, structure_hash, self.salt)
        if why:
            log.warning("ignoring text cache file %s: %s", path, why)
            return None
        texts = data["texts"]
        return {v: texts[v] for v in VARIANTS}

    def put(self, structure_hash: str, texts: dict[str, str], seconds: float) -> None:
        record = {"structure_hash": structure_hash, "salt": self.salt, "texts": texts, "seconds": seconds}
        write_text(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n", self.path(structure_hash))
