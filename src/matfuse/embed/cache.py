"""On-disk cache of text embeddings, shared by runs, variants and datasets.

Layout: ``<cache_dir>/<slug>-<pooling>-L<max_length>-<key>/`` where ``key`` hashes the encoder
identity (hub commit or checkpoint SHA-256, see :mod:`matfuse.embed.encoder`), the pooling and the
maximum length. Inside, ``meta.json`` records what the key stands for and every run that computed
something adds one NEW ``part-*.parquet`` (written atomically) holding only the rows it computed:
``text_sha256`` (str), ``embedding`` (fixed_size_list<float32>[d]), ``n_tokens`` (int32, tokens
encoded), ``truncated`` (bool). Concurrent jobs (e.g. the text variants of one dataset) therefore never
rewrite each other's files; a text computed twice by racing jobs is simply stored twice and the
first copy read wins (both are the same vector to ~1e-6).

Nothing stored is trusted blindly: :meth:`EmbeddingCache.lookup` skips (with a warning) parts that
cannot be read, have another schema or another embedding width, and drops rows whose vector is
null or not finite, so their texts are computed again and stored in a new part -- a damaged cache
repairs itself on the next run. :meth:`EmbeddingCache.append` refuses non-finite vectors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from matfuse.io import write_json, write_parquet

log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"


def text_sha256(text: str) -> str:
    """Cache key of one text: SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _slug(label: str, limit: int = 48) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.]+", "_", label).strip("_.") or "encoder"
    return slug[-limit:]


def embedding_table(
    key_name: str, keys: list[str], emb: np.ndarray, n_tokens: np.ndarray, truncated: np.ndarray
) -> pa.Table:
    """A table ``key_name`` (str), ``embedding`` (fixed_size_list<float32>[d]), ``n_tokens``, ``truncated``."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(keys):
        raise ValueError(f"embedding matrix has shape {emb.shape}, expected ({len(keys)}, d)")
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()), emb.shape[1])
    return pa.table(
        {
            key_name: pa.array(keys, type=pa.string()),
            "embedding": vectors,
            "n_tokens": pa.array(np.asarray(n_tokens, dtype=np.int32), type=pa.int32()),
            "truncated": pa.array(np.asarray(truncated, dtype=bool), type=pa.bool_()),
        }
    )


def vectors_of(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A fixed-size-list<float32> column as a float32 matrix [n, d] (no copy per row)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_fixed_size_list(arr.type):
        raise TypeError(f"embedding column has type {arr.type}, expected fixed_size_list<float32>")
    if arr.null_count:
        raise ValueError("embedding column holds nulls")
    d = arr.type.list_size
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(arr), d)


#: Columns of a cache part (more may be present; they are not read).
PART_COLUMNS = ("text_sha256", "embedding", "n_tokens", "truncated")
PART_FORMAT = "text_sha256 string, embedding fixed_size_list<float32>[d], n_tokens int, truncated bool"


def _schema_problem(schema: pa.Schema) -> str:
    """Why a part's schema is not a cache part's ('' when it is; extra columns are allowed)."""
    missing = [n for n in PART_COLUMNS if n not in schema.names]
    if missing:
        return f"no column(s) {missing}"
    twice = [n for n in PART_COLUMNS if len(schema.get_all_field_indices(n)) > 1]
    if twice:
        return f"column(s) {twice} appear more than once"
    key, vec, n_tok, trunc = (schema.field(n).type for n in PART_COLUMNS)
    if not (pa.types.is_string(key) or pa.types.is_large_string(key)):
        return f"text_sha256 has type {key}"
    if not (pa.types.is_fixed_size_list(vec) and pa.types.is_float32(vec.value_type) and vec.list_size > 0):
        return f"embedding has type {vec}"
    if not pa.types.is_integer(n_tok):
        return f"n_tokens has type {n_tok}"
    if not pa.types.is_boolean(trunc):
        return f"truncated has type {trunc}"
    return ""


def _common_width(parts: list[tuple[Path, pa.Table]]) -> int:
    """The embedding width most parts share (the oldest part's among equals; 0 without parts)."""
    widths = [t.schema.field("embedding").type.list_size for _, t in parts]
    return max(dict.fromkeys(widths), key=widths.count) if widths else 0


def bad_vector_rows(emb: np.ndarray) -> np.ndarray:
    """Rows of an embedding matrix [n, d] holding a NaN or infinity."""
    if emb.ndim != 2:
        raise ValueError(f"embedding matrix has shape {emb.shape}, expected (n, d)")
    return ~np.isfinite(emb).all(axis=1)


def _numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return arr.to_numpy(zero_copy_only=False)


def _valid_rows(table: pa.Table, part: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(hashes, vectors float32 [n, d], n_tokens int64, truncated bool) of the usable rows of
    ``table`` (a part, filtered); rows with a null key/vector/count/flag, a non-finite vector or
    a negative count are dropped, with a warning naming ``part``."""
    n = table.num_rows
    arr = table["embedding"].combine_chunks()
    d = arr.type.list_size
    values = arr.values.slice(arr.offset * d, n * d)
    vectors = _numpy(values).astype(np.float32, copy=False).reshape(n, d)  # null values read as NaN
    n_tok = _numpy(pc.fill_null(table["n_tokens"].cast(pa.int64()), -1)).astype(np.int64)
    bad = (
        _numpy(arr.is_null()).astype(bool)
        | bad_vector_rows(vectors)
        | (n_tok < 0)
        | _numpy(table["text_sha256"].is_null()).astype(bool)
        | _numpy(table["truncated"].is_null()).astype(bool)
    )
    keys = table["text_sha256"].to_pylist()
    if bad.any():
        log.warning(
            "cache part %s: dropping %d row(s) with a null or non-finite vector or a null/negative "
            "count; their texts are computed again (text_sha256 %s)",
            part,
            int(bad.sum()),
            [keys[i] for i in np.flatnonzero(bad)[:5]],
        )
    keep = ~bad
    trunc = _numpy(pc.fill_null(table["truncated"], False)).astype(bool)
    return [k for k, ok in zip(keys, keep) if ok], np.ascontiguousarray(vectors[keep]), n_tok[keep], trunc[keep]


@dataclass
class CachedRows:
    """Rows found in the cache, aligned with ``hashes``."""

    hashes: list[str]
    embeddings: np.ndarray
    n_tokens: np.ndarray
    truncated: np.ndarray


class EmbeddingCache:
    """Append-only Parquet cache of one (encoder identity, pooling, max_length) combination."""

    def __init__(self, root: str | os.PathLike[str], identity: str, pooling: str, max_length: int, label: str):
        self.identity = identity
        self.pooling = pooling
        self.max_length = int(max_length)
        key = hashlib.sha256(f"{identity}|{pooling}|{self.max_length}".encode()).hexdigest()[:16]
        self.dir = Path(root) / f"{_slug(label)}-{pooling}-L{self.max_length}-{key}"

    def _ensure_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            write_json(
                {"encoder_identity": self.identity, "pooling": self.pooling, "max_length": self.max_length},
                meta,
            )

    def parts(self) -> list[Path]:
        """Completed part files (temporaries of writes in progress start with '.' and are skipped)."""
        return sorted(self.dir.glob(PART_GLOB)) if self.dir.is_dir() else []

    def lookup(self, hashes: Iterable[str], dim: int | None = None) -> CachedRows:
        """Cached rows among ``hashes`` (first valid stored copy of each).

        Never raises on what the cache directory holds: a part that cannot be read, lacks the
        columns of :data:`PART_FORMAT` (or has other types), or whose embedding width is not
        ``dim`` (None: the width most parts share) is skipped with a warning; rows with a null or
        non-finite vector, or a null/negative count or null flag, are dropped with a warning.
        Texts of skipped rows are thus misses: the caller computes them again and appends good
        copies, which later lookups find.
        """
        wanted_keys = sorted(set(hashes))
        wanted = pa.array(wanted_keys, type=pa.string())
        parts = self._readable_parts() if wanted_keys else []
        width = _common_width(parts) if dim is None else int(dim)
        held = "the encoder gives" if dim is not None else "the other parts hold"
        keys: list[str] = []
        emb: list[np.ndarray] = []
        n_tok: list[np.ndarray] = []
        trunc: list[np.ndarray] = []
        for part, table in parts:
            d = table.schema.field("embedding").type.list_size
            if d != width:
                log.warning("ignoring cache part %s: embeddings of width %d, %s %d", part, d, held, width)
                continue
            try:
                value_set = wanted.cast(table.schema.field("text_sha256").type)
                rows = _valid_rows(table.filter(pc.is_in(table["text_sha256"], value_set=value_set)), part)
            except Exception as exc:  # noqa: BLE001 -- whatever a part holds must not stop the run
                log.warning("ignoring cache part %s: %s: %s", part, type(exc).__name__, exc)
                continue
            keys.extend(rows[0])
            emb.append(rows[1])
            n_tok.append(rows[2])
            trunc.append(rows[3])
        if not keys:
            return CachedRows([], np.zeros((0, 0), np.float32), np.zeros(0, np.int32), np.zeros(0, bool))
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        take = np.fromiter(first.values(), dtype=np.int64, count=len(first))
        return CachedRows(
            hashes=list(first),
            embeddings=np.concatenate(emb)[take],
            # parts written before 2026-11-25 hold the untruncated count: tokens encoded are at most max_length
            n_tokens=np.minimum(np.concatenate(n_tok)[take], self.max_length).astype(np.int32),
            truncated=np.concatenate(trunc)[take],
        )

    def _readable_parts(self) -> list[tuple[Path, pa.Table]]:
        """(path, table of the :data:`PART_COLUMNS`) of every part in the cache's format."""
        out: list[tuple[Path, pa.Table]] = []
        for part in self.parts():
            try:
                why = _schema_problem(pq.read_schema(part))
                table = None if why else pq.read_table(part, columns=list(PART_COLUMNS))
            except Exception as exc:  # noqa: BLE001 -- a foreign/corrupt file must not poison every run
                log.warning("ignoring unreadable cache part %s: %s: %s", part, type(exc).__name__, exc)
                continue
            if table is None:
                log.warning("ignoring cache part %s: %s (a cache part holds %s)", part, why, PART_FORMAT)
                continue
            out.append((part, table))
        return out

    def append(self, hashes: list[str], emb: np.ndarray, n_tokens: np.ndarray, truncated: np.ndarray) -> Path | None:
        """Store newly computed rows as a new part file (atomic); returns its path.

        Raises ``ValueError`` naming the texts (hashes) whose vectors are not finite: the cache
        never stores a vector that every later run would reuse (the caller rejects those texts).
        """
        if not hashes:
            return None
        bad = bad_vector_rows(np.asarray(emb))
        if bad.any():
            named = [hashes[i] for i in np.flatnonzero(bad)]
            raise ValueError(
                f"refusing to cache {len(named)} non-finite embedding(s) in {self.dir}: text_sha256 {named[:5]}"
            )
        self._ensure_dir()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.dir / f"part-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet(embedding_table("text_sha256", hashes, emb, n_tokens, truncated), path)
        log.info("cache: stored %d new embeddings in %s", len(hashes), path)
        return path
