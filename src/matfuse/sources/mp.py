"""Materials Project source: ``MPRester(...).materials.summary.search`` through mp-api.

The API key is read from the environment variable named by ``MPSource.api_key_env`` (default
``MP_API_KEY``); Snakemake rules must list that variable under ``envvars:``. The key is handed
to mp-api only: it is never logged, never put into provenance, and scrubbed from any error
message this module raises.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
from tqdm import tqdm

from matfuse.config import MPSource

log = logging.getLogger(__name__)

#: mp-api's own default endpoint (used when ``MPSource.endpoint`` is null and no MP_API_ENDPOINT).
DEFAULT_ENDPOINT_HINT = "https://api.materialsproject.org/"
#: Enough chunks for any query: passing a number forces mp-api to page the REST endpoint
#: instead of downloading the whole collection from S3 (which would ignore ``endpoint``).
_ALL_CHUNKS = 10**9


class MPSourceError(RuntimeError):
    """The Materials Project cannot be queried as configured (message never holds the key)."""


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def read_api_key(env_var: str = "MP_API_KEY") -> str:
    """Return the API key held by ``env_var``; raise :class:`MPSourceError` saying how to set it."""
    key = os.environ.get(env_var, "").strip()
    if not key:
        raise MPSourceError(
            f"no Materials Project API key: environment variable {env_var} is unset or empty. "
            f"Get a key at https://next-gen.materialsproject.org/api and export it, e.g. "
            f"`export {env_var}=<your 32-character key>` in the shell that runs Snakemake; the "
            f"ingest rule passes it to the job through `envvars: [\"{env_var}\"]` (and "
            f"`source.api_key_env` in config.yaml names the variable)."
        )
    if len(key) != 32:
        raise MPSourceError(
            f"environment variable {env_var} holds a {len(key)}-character value; Materials Project "
            f"API keys are 32 characters (check for quotes or a truncated copy)."
        )
    return key


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _scrub(text: str, secret: str) -> str:
    """``text`` without the secret (and without mp-api's terminal colour codes)."""
    text = _ANSI.sub("", text)
    return text.replace(secret, "<MP API key>") if secret else text


def _public_url(url: str) -> str:
    """The endpoint without any user:password part (for logs and provenance)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts)


def _field_value(doc: Any, path: str) -> Any:
    """``doc.<path>`` for a document model or dict; dotted paths descend into sub-documents."""
    value: Any = doc
    for part in path.split("."):
        if value is None:
            return None
        if isinstance(value, dict):
            value = value.get(part)
        else:
            value = getattr(value, part, None)
    return value


def _to_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def docs_to_frame(docs: list[Any], targets: list[str] | dict[str, str], provenance: str) -> pd.DataFrame:
    """Turn summary documents (models or dicts) into the source contract's raw table.

    ``targets`` is a list of field names, or a mapping canonical column -> (dotted) field path.
    """
    paths = dict(targets) if isinstance(targets, dict) else {t: t for t in targets}
    targets = list(paths)
    rows: list[dict[str, Any]] = []
    non_numeric: dict[str, int] = {t: 0 for t in targets}
    for doc in tqdm(docs, desc="mp: converting documents", unit="doc", mininterval=2.0):
        mid = _field_value(doc, "material_id")
        structure = _field_value(doc, "structure")
        if isinstance(structure, dict):
            fmt = "pymatgen"
        elif isinstance(structure, str):
            fmt = "cif" if "_cell_length_a" in structure else "poscar"
        else:
            fmt = "structure"  # a pymatgen Structure (document model) or None (ingest rejects it)
        row: dict[str, Any] = {
            "material_id": None if mid is None else str(mid),
            "structure": structure,
            "structure_format": fmt,
        }
        for t in targets:
            raw = _field_value(doc, paths[t])
            value = _to_float(raw)
            if raw is not None and math.isnan(value) and not (isinstance(raw, float) and math.isnan(raw)):
                non_numeric[t] += 1
            row[t] = value
        rows.append(row)
    for t, n in non_numeric.items():
        if n:
            log.warning("mp: %d value(s) of field %r are not numbers; treated as missing", n, t)
    columns = ["material_id", "structure", "structure_format", *targets]
    out = pd.DataFrame(rows, columns=columns)
    for t in targets:
        out[t] = out[t].astype("float64")
    out["provenance"] = provenance
    return out


def fetch(cfg: MPSource) -> pd.DataFrame:
    """Query ``materials.summary.search(**cfg.criteria)`` and return raw records.

    Columns: ``material_id``, ``structure`` (pymatgen ``Structure``), ``structure_format``
    (``"structure"``), one float column per ``cfg.targets`` entry (NaN when the document lacks
    it) and ``provenance`` (JSON: source, endpoint, route, criteria, fields, database version,
    client versions, retrieval time; never the key).
    """
    from mp_api.client import MPRester
    from mp_api.client.core import MPRestError
    from requests.exceptions import RequestException

    key = read_api_key(cfg.api_key_env)
    paths = {t: cfg.target_fields.get(t, t) for t in cfg.targets}
    fields = list(dict.fromkeys(["material_id", "structure", *(p.split(".", 1)[0] for p in paths.values())]))
    criteria = dict(cfg.criteria)
    has_query = any(not k.startswith("_") for k in criteria)
    num_chunks = cfg.num_chunks
    if num_chunks is None and not has_query:
        log.warning(
            "mp: no search criteria -> every summary document will be paged from the REST API "
            "(tens of thousands of structures); set `criteria` or `num_chunks` to limit it"
        )
        num_chunks = _ALL_CHUNKS
    shown = _public_url(cfg.endpoint) if cfg.endpoint else "mp-api default endpoint"
    log.info(
        "mp: summary search at %s with criteria %s, fields %s, chunk_size %d, num_chunks %s",
        shown,
        json.dumps(criteria, default=str, sort_keys=True),
        fields,
        cfg.chunk_size,
        cfg.num_chunks if cfg.num_chunks is not None else "all",
    )
    retrieved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        with MPRester(key, endpoint=cfg.endpoint) as mpr:
            endpoint = _public_url(mpr.endpoint)
            db_version = mpr.db_version or None
            log.info("mp: connected to %s (database version %s)", endpoint, db_version or "unknown")
            summary = mpr.materials.summary
            unknown = [p for p in paths.values() if p.split(".", 1)[0] not in summary.available_fields]
            if unknown:
                raise MPSourceError(
                    f"source.targets {unknown} are not fields of the Materials Project summary "
                    f"documents; valid fields include {sorted(summary.available_fields)}"
                )
            docs = summary.search(
                **criteria, fields=fields, chunk_size=cfg.chunk_size, num_chunks=num_chunks
            )
    except MPSourceError as exc:
        raise MPSourceError(_scrub(str(exc), key)) from None
    except (MPRestError, RequestException, TypeError, ValueError) as exc:
        raise MPSourceError(
            _scrub(
                f"Materials Project query failed ({type(exc).__name__}) at {shown} with criteria "
                f"{json.dumps(criteria, default=str, sort_keys=True)}: {exc}",
                key,
            )
        ) from None
    log.info("mp: received %d summary documents", len(docs))
    provenance = json.dumps(
        {
            "source": "mp",
            "endpoint": endpoint,
            "route": "materials/summary",
            "criteria": criteria,
            "fields": fields,
            "chunk_size": cfg.chunk_size,
            "num_chunks": cfg.num_chunks,
            "database_version": db_version,
            "mp_api_version": _pkg_version("mp-api"),
            "emmet_core_version": _pkg_version("emmet-core"),
            "retrieved_at": retrieved_at,
            "n_documents": len(docs),
        },
        default=str,
        sort_keys=True,
    )
    if key in provenance:  # paranoid: e.g. a criterion value that equals the key
        raise MPSourceError("refusing to record provenance that contains the API key")
    out = docs_to_frame(list(docs), paths, provenance)
    n_missing = {t: int(out[t].isna().sum()) for t in cfg.targets}
    log.info("mp: %d rows; missing target values per target: %s", len(out), n_missing)
    return out
