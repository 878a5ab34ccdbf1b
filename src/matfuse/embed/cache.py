"""On-disk cache of text embeddings, shared by runs, variants and datasets.

Layout: ``<cache_dir>/<slug>-<pooling>-L<max_length>-<key>/`` where ``key`` hashes the encoder
identity (hub commit or checkpoint SHA-256, see :mod:`matfuse.embed.encoder`), the pooling and the
maximum length. Inside, ``meta.json`` records what the key stands for and every run that computed
something adds one NEW ``part-*.parquet`` (written atomically) holding only the rows it computed:
``text_sha256`` (str), ``embedding`` (fixed_size_list<float32>[d]), ``n_tokens`` (int32, tokens
encoded), ``truncated`` (bool). Concurrent jobs (e.g. the text variants of one dataset) therefore never
rewrite each other's files; a text computed twice by racing jobs is simply stored twice and the
first copy read wins (both are the same vector to ~1e-6).
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

    def lookup(self, hashes: Iterable[str]) -> CachedRows:
        """Cached rows among ``hashes`` (first stored copy of each)."""
        wanted = pa.array(sorted(set(hashes)), type=pa.string())
        found: list[pa.Table] = []
        for part in self.parts():
            try:
                table = pq.read_table(part)
            except Exception as exc:  # a foreign/corrupt file must not poison every run
                log.warning("ignoring unreadable cache part %s: %s", part, exc)
                continue
            if len(wanted):
                found.append(table.filter(pc.is_in(table["text_sha256"], value_set=wanted)))
        if not found or not sum(len(t) for t in found):
            return CachedRows([], np.zeros((0, 0), np.float32), np.zeros(0, np.int32), np.zeros(0, bool))
        table = pa.concat_tables(found, promote_options="none")
        keys = table["text_sha256"].to_pylist()
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        take = pa.array(list(first.values()), type=pa.int64())
        table = table.take(take)
        return CachedRows(
            hashes=table["text_sha256"].to_pylist(),
            embeddings=vectors_of(table["embedding"]),
            # parts written before 2026-11-25 hold the untruncated count: tokens encoded are at most max_length
            n_tokens=np.minimum(table["n_tokens"].to_numpy(), self.max_length).astype(np.int32),
            truncated=table["truncated"].to_numpy(zero_copy_only=False).astype(bool),
        )

    def append(self, hashes: list[str], emb: np.ndarray, n_tokens: np.ndarray, truncated: np.ndarray) -> Path | None:
        """Store newly computed rows as a new part file (atomic); returns its path."""
        if not hashes:
            return None
        self._ensure_dir()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.dir / f"part-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.parquet"
        write_parquet(embedding_table("text_sha256", hashes, emb, n_tokens, truncated), path)
        log.info("cache: stored %d new embeddings in %s", len(hashes), path)
        return path
