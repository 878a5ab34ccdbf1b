"""Seeded train/val/test splits, written as files shared by every model of a dataset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from matfuse.config import SplitConfig
from matfuse.io import write_json

log = logging.getLogger(__name__)


def group_ids(material_ids: list[str], groups: Sequence[str | None] | None) -> list[list[str]]:
    """Ids bundled by group key (e.g. ``structure_hash``), each bundle sorted, bundles ordered by first id.

    Ids without a key (or with ``groups=None``) are bundles of their own.
    """
    if groups is not None and len(groups) != len(material_ids):
        raise ValueError(f"{len(groups)} group keys for {len(material_ids)} ids")
    bundles: dict[Any, list[str]] = {}
    for i, mid in enumerate(material_ids):
        key = groups[i] if groups is not None and groups[i] is not None else ("id", mid)
        bundles.setdefault(key, []).append(mid)
    return sorted((sorted(b) for b in bundles.values()), key=lambda b: b[0])


def make_splits(
    material_ids: list[str], cfg: SplitConfig, groups: Sequence[str | None] | None = None
) -> dict[str, list[str]]:
    """Shuffle groups of ids (sorted first, so the input order does not matter) and cut by fractions.

    ``groups`` holds one key per id (e.g. its ``structure_hash``): ids that share a key always land
    in the same split, so an identical structure under two ids can never be in train and test. With
    no shared keys this is exactly a shuffle of the sorted ids cut at ``round(val * n)`` and
    ``round(test * n)``; a group that straddles a cut goes wholly to the side where it starts.
    """
    if len(set(material_ids)) != len(material_ids):
        raise ValueError("material ids are not unique")
    n = len(material_ids)
    if n < 3:
        raise ValueError(f"need at least 3 entries to split, got {n}")
    bundles = group_ids(list(material_ids), groups)
    perm = np.random.default_rng(cfg.seed).permutation(len(bundles))
    n_val = max(1, int(round(cfg.val * n)))
    n_test = max(1, int(round(cfg.test * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{n} entries leave no training data with fractions {cfg}")
    sides: dict[str, list[list[str]]] = {"train": [], "val": [], "test": []}
    start = 0
    for b in perm:
        bundle = bundles[b]
        side = "train" if start < n_train else ("val" if start < n_train + n_val else "test")
        sides[side].append(bundle)
        start += len(bundle)
    # Large groups can leave a side empty (e.g. 6 ids in 4 groups): give it the last group of the
    # side with the most groups. Never happens when no group holds more than one id.
    while len(bundles) >= 3 and any(not v for v in sides.values()):
        empty = next(k for k, v in sides.items() if not v)
        donor = max(sides, key=lambda k: (len(sides[k]), k == "train"))
        sides[empty].append(sides[donor].pop())
    if any(not v for v in sides.values()):
        empty_sides = [k for k, v in sides.items() if not v]
        raise ValueError(
            f"split {empty_sides} would be empty: {n} entries in {len(bundles)} structure groups cannot fill "
            f"fractions {cfg.train}/{cfg.val}/{cfg.test}"
        )
    return {k: sorted(mid for bundle in v for mid in bundle) for k, v in sides.items()}


def group_report(material_ids: list[str], groups: Sequence[str | None] | None) -> dict[str, int]:
    """How many groups there are and how many of them hold more than one id."""
    bundles = group_ids(list(material_ids), groups)
    multi = [b for b in bundles if len(b) > 1]
    return {"n_groups": len(bundles), "groups_with_several_ids": len(multi), "ids_in_such_groups": sum(map(len, multi))}


def write_splits(entries_path: str | Path, out_path: str | Path, cfg: SplitConfig) -> dict[str, list[str]]:
    """Stage function: read entries, write ``splits.json`` with the ids, settings and grouping used.

    Ids are grouped by ``structure_hash`` (identical structures stay on one side of every cut).
    """
    import pyarrow.parquet as pq

    has_hash = "structure_hash" in pq.read_schema(entries_path).names
    cols = ["material_id", "structure_hash"] if has_hash else ["material_id"]
    df = pd.read_parquet(entries_path, columns=cols)
    ids = df["material_id"].astype(str).tolist()
    groups = df["structure_hash"].tolist() if has_hash else None
    if not has_hash:
        log.warning("%s has no structure_hash column: ids are split without grouping identical structures", entries_path)
    splits = make_splits(ids, cfg, groups)
    report = {"grouped_by": "structure_hash" if has_hash else None, **group_report(ids, groups)}
    payload = {**splits, "settings": cfg.model_dump(), "counts": {k: len(v) for k, v in splits.items()}, "groups": report}
    write_json(payload, out_path)
    log.info("split %d entries: %s; %d structure groups, %d of them hold several ids (%d ids, kept together)",
             len(ids), payload["counts"], report["n_groups"], report["groups_with_several_ids"], report["ids_in_such_groups"])
    return splits


def read_splits(path: str | Path) -> dict[str, list[str]]:
    import json

    with open(path) as fh:
        data = json.load(fh)
    return {k: list(data[k]) for k in ("train", "val", "test")}
