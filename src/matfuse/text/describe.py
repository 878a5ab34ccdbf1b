"""Sharded, cached Robocrystallographer stage: :func:`describe_shard` and :func:`merge_texts`.

Sharding: an entry belongs to shard ``int(sha256(structure_hash)[:16], 16) % n_shards`` (the
``structure_hash`` column of the entries table, computed if absent), so duplicate structures land
in the same shard and are described once. Importing robocrys costs ~20 s, so each shard job
describes many structures in a pool of ``workers_per_shard`` worker processes (one robocrys
import each), spawned with ``PYTHONHASHSEED=0`` because robocrys' phrase order depends on the
string hash seed (see :func:`seeded_pool`). The parent never imports robocrys (and starts no
worker) when every entry of the shard is a cache hit.

Per-structure failures (robocrys exception, unparseable structure, over ``timeout_s``, dead worker)
are rows with ``status="failed"`` and the reason in ``error``; :func:`merge_texts` turns them into
the rejects table (stage ``describe``). Nothing is dropped silently.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import logging
import multiprocessing
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from matfuse.config import TextConfig
from matfuse.io import rejects_frame, write_parquet
from matfuse.text.cache import TextCache
from matfuse.text.settings import fast_paths_verified

log = logging.getLogger(__name__)

STAGE = "describe"
SHARD_SCHEMA = pa.schema(
    [
        ("material_id", pa.string()),
        ("text_all", pa.string()),
        ("text_key", pa.string()),
        ("text_single", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("seconds", pa.float64()),
        ("cached", pa.bool_()),
    ]
)
TEXT_COLUMNS = ["material_id", "text_all", "text_key", "text_single"]


class DescribeTimeout(BaseException):  # not Exception: robocrys must not swallow it
    """Raised inside a structure's description when it runs over ``timeout_s``."""


def shard_of(structure_hash: str, n_shards: int) -> int:
    """Deterministic shard of an entry (stable across runs, machines and Python versions)."""
    return int(hashlib.sha256(structure_hash.encode()).hexdigest()[:16], 16) % n_shards


# --------------------------------------------------------------------------- one structure
def _on_alarm(signum: int, frame: Any) -> None:  # pragma: no cover - exercised via timeout test
    raise DescribeTimeout()


def describe_one(structure_json: str, fast_paths: bool, timeout_s: float | None) -> dict[str, Any]:
    """Describe one structure; never raises. Returns texts or the failure reason, and seconds.

    ``fast_paths``: use robocrys' exact fast paths (if the installed versions are the verified
    ones, see :func:`matfuse.text.settings.fast_paths_verified`; else stock robocrys).
    The time limit uses ``SIGALRM`` (main thread of this process only; pool workers run tasks in
    their main thread). Code inside C extensions is interrupted when it returns to Python.
    """
    from matfuse.structures import load_structure

    if fast_paths and "matfuse.text.robocrys_text" not in sys.modules:
        from matfuse.text.lazy_prototypes import install

        install()  # before robocrys is imported; a no-op for unverified versions
    from matfuse.text.robocrys_text import get_robocrys_texts

    texts_maker = get_robocrys_texts(fast_paths)  # per-process, outside the timer
    use_alarm = timeout_s is not None and timeout_s > 0 and hasattr(signal, "setitimer")
    t0 = time.perf_counter()
    old = None
    try:
        if use_alarm:
            old = signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, float(timeout_s))  # type: ignore[arg-type]
        try:
            structure = load_structure(structure_json)
            texts = texts_maker.describe(structure)
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
        return {"texts": texts, "error": None, "seconds": time.perf_counter() - t0}
    except DescribeTimeout:
        return {"texts": None, "error": f"timeout: over {timeout_s:g} s", "seconds": time.perf_counter() - t0}
    except Exception as exc:  # robocrys/pymatgen raise many types; record them all
        msg = f"{type(exc).__name__}: {exc}".strip()
        return {"texts": None, "error": msg[:500], "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- shard
def _read_entries(entries_path: str | Path) -> pd.DataFrame:
    names = set(pq.read_schema(entries_path).names)
    missing = {"material_id", "structure"} - names
    if missing:
        raise ValueError(f"{entries_path}: entries table lacks column(s) {sorted(missing)}")
    cols = ["material_id", "structure"] + (["structure_hash"] if "structure_hash" in names else [])
    df = pq.read_table(entries_path, columns=cols, use_threads=False).to_pandas()
    if "structure_hash" not in df.columns:
        from matfuse.structures import load_structure, structure_hash

        df["structure_hash"] = [structure_hash(load_structure(s)) for s in df["structure"]]
    if df["material_id"].duplicated().any():
        dup = df.loc[df["material_id"].duplicated(), "material_id"].iloc[0]
        raise ValueError(f"{entries_path}: duplicate material_id {dup!r}")
    return df


_POOLS: dict[int, cf.ProcessPoolExecutor] = {}


@contextlib.contextmanager
def _hash_seed_zero() -> Iterator[None]:
    """Set ``PYTHONHASHSEED=0`` in os.environ while worker processes may be spawned."""
    old = os.environ.get("PYTHONHASHSEED")
    os.environ["PYTHONHASHSEED"] = "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONHASHSEED"]
        else:
            os.environ["PYTHONHASHSEED"] = old


def seeded_pool(workers: int) -> cf.ProcessPoolExecutor:
    """A process pool (spawned, ``PYTHONHASHSEED=0``) reused for the life of this process.

    robocrys orders some phrases by iterating Python sets of strings ("corner and edge-sharing",
    component orientations), so its text depends on the interpreter's hash seed. Describing in
    workers with a fixed seed makes texts reproducible across runs and machines (and equal to
    stock robocrys run with ``PYTHONHASHSEED=0``). Submit to it only inside :func:`submit_seeded`.
    """
    pool = _POOLS.get(workers)
    if pool is None or getattr(pool, "_broken", False):
        pool = _POOLS[workers] = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return pool


def submit_seeded(pool: cf.ProcessPoolExecutor, fn: Any, *args: Any) -> cf.Future:
    """``pool.submit`` with the seed in the environment (workers are spawned lazily on submit)."""
    with _hash_seed_zero():
        return pool.submit(_seeded_call, fn, *args)


def _seeded_call(fn: Any, *args: Any) -> Any:
    if sys.flags.hash_randomization:
        raise RuntimeError("worker runs with hash randomization on (PYTHONHASHSEED is not 0)")
    return fn(*args)


def shutdown_workers() -> None:
    """Stop the worker pools of :func:`seeded_pool` (call when done describing).

    Needed when this process is itself a multiprocessing child: such a process joins its
    children on exit *before* the executors' own shutdown hooks run, so idle pool workers would
    keep it alive forever. In a main process the pools also stop by themselves at exit.
    """
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)


def _compute(todo: dict[str, str], cfg: TextConfig) -> Iterable[tuple[str, dict[str, Any]]]:
    """Yield ``(structure_hash, result)`` for each unique structure to describe.

    In-process only when this process already runs with ``PYTHONHASHSEED=0`` and one worker is
    asked for; otherwise in :func:`seeded_pool` workers (one robocrys import each).
    """
    if not todo:
        return
    # The version gate is asked here, before any worker starts (package metadata, no robocrys
    # import): with unverified versions the workers run stock robocrys and this process warns once.
    timeout = cfg.timeout_s
    fast = cfg.fast_paths and fast_paths_verified(warn=True)
    bar = tqdm(total=len(todo), desc="robocrys", unit="structure", mininterval=5.0)
    try:
        if cfg.workers_per_shard == 1 and not sys.flags.hash_randomization:
            for key, sjson in todo.items():
                yield key, describe_one(sjson, fast, timeout)
                bar.update()
            return
        pool = seeded_pool(cfg.workers_per_shard)
        # largest first (JSON length ~ number of sites): the long ones do not end up alone at the end
        order = sorted(todo, key=lambda k: len(todo[k]), reverse=True)
        futures = {submit_seeded(pool, describe_one, todo[key], fast, timeout): key for key in order}
        for fut in cf.as_completed(futures):
            key = futures[fut]
            try:
                yield key, fut.result()
            except Exception as exc:  # BrokenProcessPool: a worker died (OOM, segfault)
                yield key, {"texts": None, "error": f"worker process died: {type(exc).__name__}: {exc}",
                            "seconds": float("nan")}
            bar.update()
    finally:
        bar.close()


def describe_shard(
    entries_path: str | Path,
    out_path: str | Path,
    shard: int,
    n_shards: int,
    cache_dir: str | Path,
    cfg: TextConfig,
) -> None:
    """Describe the entries of one shard with robocrys (all / key / single) and write a Parquet.

    Output columns: material_id, text_all, text_key, text_single, status ("ok"/"failed"),
    error (reason or null), seconds (description time; cache look-up time for hits), cached.
    Texts come from the per-structure cache under ``cache_dir`` when present; new successes are
    added to it. Every entry of the shard gets exactly one row.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} out of range for n_shards={n_shards}")
    t_start = time.perf_counter()
    df = _read_entries(entries_path)
    df = df[[shard_of(h, n_shards) == shard for h in df["structure_hash"]]].reset_index(drop=True)
    cache = TextCache(cache_dir)
    log.info("shard %d/%d: %d entries from %s (cache %s)", shard, n_shards, len(df), entries_path, cache.root)

    hits: dict[str, tuple[dict[str, str], float]] = {}
    todo: dict[str, str] = {}
    for h, sjson in zip(df["structure_hash"], df["structure"]):
        if h in hits or h in todo:
            continue
        t0 = time.perf_counter()
        texts = cache.get(h)
        if texts is not None:
            hits[h] = (texts, time.perf_counter() - t0)
        else:
            todo[h] = sjson
    log.info("cache: %d hits, %d structures to describe", len(hits), len(todo))

    results: dict[str, dict[str, Any]] = {}
    for h, res in _compute(todo, cfg):
        results[h] = res
        if res["texts"] is not None:
            cache.put(h, res["texts"], res["seconds"])

    rows = []
    for mid, h in zip(df["material_id"], df["structure_hash"]):
        if h in hits:
            texts, secs = hits[h]
            rows.append(_row(mid, texts, None, secs, True))
        else:
            res = results[h]
            rows.append(_row(mid, res["texts"], res["error"], res["seconds"], False))
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    write_parquet(table, out_path)
    _log_summary(results, len(hits), len(df), time.perf_counter() - t_start)


def _row(mid: str, texts: dict[str, str] | None, error: str | None, seconds: float, cached: bool) -> dict[str, Any]:
    ok = texts is not None
    return {
        "material_id": str(mid),
        "text_all": texts["all"] if ok else None,
        "text_key": texts["key"] if ok else None,
        "text_single": texts["single"] if ok else None,
        "status": "ok" if ok else "failed",
        "error": None if ok else (error or "unknown error"),
        "seconds": float(seconds),
        "cached": cached,
    }


def _log_summary(results: dict[str, dict[str, Any]], n_hits: int, n_entries: int, wall: float) -> None:
    secs = [r["seconds"] for r in results.values() if r["seconds"] == r["seconds"]]
    failed = {h: r["error"] for h, r in results.items() if r["texts"] is None}
    if secs:
        log.info(
            "described %d structures (%d cache hits, %d entries) in %.1f s wall: "
            "median %.2f s, max %.2f s per structure, %d failures",
            len(results), n_hits, n_entries, wall, statistics.median(secs), max(secs), len(failed),
        )
    else:
        log.info("no structure to describe (%d cache hits, %d entries), %.1f s wall", n_hits, n_entries, wall)
    for h, err in list(failed.items())[:20]:
        log.warning("describe failed for structure %s: %s", h, err)


# --------------------------------------------------------------------------- merge
#: ``text_source`` of a text robocrys wrote here.
LOCAL_SOURCE = "robocrys (local)"


def merge_texts(
    shard_paths: Sequence[str | Path], out_texts_path: str | Path, out_rejects_path: str | Path,
    descriptions: Any = None,
) -> pd.DataFrame:
    """Concatenate shard outputs: ok rows -> texts table, failures -> rejects (stage ``describe``).

    ``descriptions`` (a :class:`matfuse.config.DescriptionsTable` / ``DescriptionsMP``): precomputed
    'all' texts replace robocrys' where the source has one (``text_source`` says which; key and
    single stay robocrys'); an entry robocrys failed on keeps a precomputed 'all' text (key/single
    null, the failure stays in the rejects with a note). Unusable precomputed texts are rejects of
    stage ``describe:precomputed`` (the entry keeps robocrys' text).

    Returns the texts table (material_id, text_all, text_key, text_single, text_source), sorted by
    material_id.
    """
    frames = [pq.read_table(p, schema=SHARD_SCHEMA).to_pandas() for p in shard_paths]
    allrows = pd.concat(frames, ignore_index=True) if frames else SHARD_SCHEMA.empty_table().to_pandas()
    dup = allrows["material_id"][allrows["material_id"].duplicated()]
    if len(dup):
        raise ValueError(f"material_id {dup.iloc[0]!r} appears in more than one shard row")
    bad_status = set(allrows["status"]) - {"ok", "failed"}
    if bad_status:
        raise ValueError(f"unexpected status value(s) {sorted(bad_status)} in shards")
    ok = allrows[allrows["status"] == "ok"]
    failed = allrows[allrows["status"] != "ok"]
    texts = ok[TEXT_COLUMNS].assign(text_source=LOCAL_SOURCE)
    problems: list[dict[str, Any]] = []
    outside: dict[str, str] = {}
    if descriptions is not None:
        from matfuse.text.precomputed import read_descriptions

        pre, problems = read_descriptions(descriptions, sorted(allrows["material_id"]))
        outside = dict(zip(pre["material_id"], pre["source"]))
        pre_text = dict(zip(pre["material_id"], pre["text"]))
        have = texts["material_id"].isin(pre_text)
        texts.loc[have, "text_all"] = texts.loc[have, "material_id"].map(pre_text)
        texts.loc[have, "text_source"] = texts.loc[have, "material_id"].map(outside)
        rescued = failed[failed["material_id"].isin(pre_text)]
        if len(rescued):
            texts = pd.concat([texts, pd.DataFrame({
                "material_id": rescued["material_id"], "text_all": rescued["material_id"].map(pre_text),
                "text_key": None, "text_single": None, "text_source": rescued["material_id"].map(outside),
            })], ignore_index=True)
        log.info("precomputed descriptions: %d of %d entries ('all' text), %d unusable, %d robocrys failures rescued",
                 len(pre_text), len(allrows), len(problems), len(rescued))
    texts = texts.sort_values("material_id").reset_index(drop=True)
    rejects = rejects_frame(
        [
            {"material_id": m, "stage": STAGE,
             "reason": (e or "unknown error") + (f"; 'all' text from {outside[m]} kept, no key/single" if m in outside else "")}
            for m, e in zip(failed["material_id"], failed["error"])
        ] + list(problems)
    )
    text_schema = pa.schema([SHARD_SCHEMA.field(c) for c in TEXT_COLUMNS] + [("text_source", pa.string())])
    write_parquet(pa.Table.from_pandas(texts, schema=text_schema, preserve_index=False), out_texts_path)
    write_parquet(rejects, out_rejects_path)
    log.info(
        "merged %d shards: %d texts (%d from cache), %d rejects",
        len(frames), len(texts), int(ok["cached"].sum()), len(rejects),
    )
    return texts
