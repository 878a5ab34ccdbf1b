"""Precomputed Robocrystallographer descriptions taken from outside (a table or the Materials Project).

:func:`read_descriptions` returns the full ('all') text of each requested material that the
configured source holds, plus a problem row for every text that is present but unusable (empty,
not a string, or an id given two different texts). Ids the source lacks are simply absent: the
caller describes them locally with robocrys (see :func:`matfuse.text.describe.merge_texts`).

For the ``mp`` kind the API key is read from the environment (``cfg.api_key_env``) and handed
to mp-api only; it is never logged, never returned, and scrubbed from error messages.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

import pandas as pd

from matfuse.config import DescriptionsMP, DescriptionsTable
from matfuse.sources.mp import MPSourceError, _field_value, _public_url, _scrub, read_api_key
from matfuse.sources.table import TableError, _ids, read_table

log = logging.getLogger(__name__)

STAGE = "describe:precomputed"
COLUMNS = ["material_id", "text", "source"]


def _collect(
    pairs: Iterable[tuple[str, Any]], ids: list[str], source: str
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(id, text) pairs -> usable texts in ``ids`` order and problem rows; other ids are ignored."""
    wanted = set(ids)
    found: dict[str, list[Any]] = {}
    for mid, text in pairs:
        if mid in wanted:
            found.setdefault(mid, []).append(text)
    rows: list[dict[str, str]] = []
    problems: list[dict[str, Any]] = []
    for mid in dict.fromkeys(ids):
        if mid not in found:
            continue
        values = found[mid]
        good = list(dict.fromkeys(v for v in values if isinstance(v, str) and v.strip()))
        bad = [v for v in values if not (isinstance(v, str) and v.strip())]
        if len(good) > 1:
            reason = f"{source}: id appears {len(values)} times with {len(good)} different texts; none used"
        elif good:
            if len(values) > 1:
                log.info("%s: id %s appears %d times; %d identical text(s) kept once, %d unusable ignored",
                         source, mid, len(values), len(values) - len(bad), len(bad))
            rows.append({"material_id": mid, "text": good[0], "source": source})
            continue
        else:
            v = bad[0]
            if isinstance(v, str):
                reason = f"{source}: text is empty" if not v else f"{source}: text is only whitespace"
            elif v is None or (isinstance(v, float) and v != v):
                reason = f"{source}: text is missing (empty cell)"
            else:
                reason = f"{source}: text is not a string ({type(v).__name__}: {str(v)[:40]!r})"
        problems.append({"material_id": mid, "stage": STAGE, "reason": reason})
    return pd.DataFrame(rows, columns=COLUMNS), problems


def _from_table(cfg: DescriptionsTable, ids: list[str]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    df = read_table(cfg.path, cfg.format)
    missing = [f"{name} {col!r}" for name, col in (("id_column", cfg.id_column), ("text_column", cfg.text_column))
               if col not in df.columns]
    if missing:
        raise TableError(
            f"{cfg.path}: descriptions {' and '.join(missing)} "
            f"{'is not a column' if len(missing) == 1 else 'are not columns'} of the table; "
            f"it has {list(df.columns)[:20]}"
        )
    source = f"table:{cfg.path}"
    table_ids = _ids(df[cfg.id_column], cfg.id_prefix)
    out = _collect(zip(table_ids.tolist(), df[cfg.text_column].tolist()), ids, source)
    log.info("%s: %d of %d requested ids have a usable description, %d unusable",
             source, len(out[0]), len(set(ids)), len(out[1]))
    return out


def _mp_id(mid: str) -> bool:
    """Whether mp-api passes ``mid`` on unchanged (it rewrites or rejects non-MP ids)."""
    from mp_api.client.core.utils import validate_ids

    try:
        return validate_ids([mid]) == [mid]
    except Exception:
        return False


def _from_mp(cfg: DescriptionsMP, ids: list[str]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    from mp_api.client import MPRester
    from mp_api.client.core import MPRestError
    from requests.exceptions import RequestException

    key = read_api_key(cfg.api_key_env)
    wanted = list(dict.fromkeys(ids))
    query = [m for m in wanted if _mp_id(m)]
    if len(query) < len(wanted):
        log.warning("mp: %d id(s) are not Materials Project ids and are not queried (e.g. %s)",
                    len(wanted) - len(query), [m for m in wanted if m not in set(query)][:3])
    shown = _public_url(cfg.endpoint) if cfg.endpoint else "mp-api default endpoint"
    pairs: list[tuple[str, Any]] = []
    db_version: str | None = None
    try:
        with MPRester(key, endpoint=cfg.endpoint) as mpr:
            shown = _public_url(mpr.endpoint)
            db_version = mpr.db_version or None
            log.info("mp: robocrys descriptions of %d ids from %s (database version %s), %d per request",
                     len(query), shown, db_version or "unknown", cfg.chunk_size)
            rester = mpr.materials.robocrys
            for start in range(0, len(query), cfg.chunk_size):
                chunk = query[start : start + cfg.chunk_size]
                docs = rester.search_docs(
                    material_ids=chunk, fields=["material_id", "description"], chunk_size=len(chunk)
                )
                for doc in docs:
                    mid = _field_value(doc, "material_id")
                    pairs.append(("" if mid is None else str(mid), _field_value(doc, "description")))
    except MPSourceError as exc:
        raise MPSourceError(_scrub(str(exc), key)) from None
    except (MPRestError, RequestException, TypeError, ValueError) as exc:
        raise MPSourceError(
            _scrub(f"Materials Project robocrys query failed ({type(exc).__name__}) at {shown}: {exc}", key)
        ) from None
    source = f"mp:robocrys (database version {db_version})" if db_version else "mp:robocrys"
    frame, problems = _collect(pairs, wanted, source)
    log.info("mp: %d documents; %d of %d requested ids have a usable description, %d unusable",
             len(pairs), len(frame), len(wanted), len(problems))
    return frame, problems


def read_descriptions(
    cfg: DescriptionsTable | DescriptionsMP, ids: list[str]
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Precomputed 'all' texts for ``ids``.

    Returns a frame with columns ``material_id``, ``text``, ``source`` (``"table:<path>"`` or
    ``"mp:robocrys (database version X)"``), one row per id with a usable text, in ``ids``
    order; and problem dicts ``{"material_id", "stage": "describe:precomputed", "reason"}`` for
    ids whose text is present but unusable (empty/whitespace, not a string, or duplicated with
    different texts). Ids the source lacks are absent from both. Duplicates with identical
    text count once.

    Raises :class:`~matfuse.sources.table.TableError` (a ValueError) for an unreadable table or
    a missing column, :class:`~matfuse.sources.mp.MPSourceError` (a RuntimeError) when the
    Materials Project cannot be queried.
    """
    if isinstance(cfg, DescriptionsTable):
        return _from_table(cfg, ids)
    if isinstance(cfg, DescriptionsMP):
        return _from_mp(cfg, ids)
    raise TypeError(f"unknown descriptions config {type(cfg).__name__}")
