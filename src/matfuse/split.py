"""Seeded train/val/test splits, written as files shared by every model of a dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from matfuse.config import SplitConfig
from matfuse.io import write_json

log = logging.getLogger(__name__)


def make_splits(material_ids: list[str], cfg: SplitConfig) -> dict[str, list[str]]:
    """Shuffle ids (sorted first, so the input order does not matter) and cut by fractions."""
    ids = sorted(set(material_ids))
    if len(ids) != len(material_ids):
        raise ValueError("material ids are not unique")
    if len(ids) < 3:
        raise ValueError(f"need at least 3 entries to split, got {len(ids)}")
    perm = np.random.default_rng(cfg.seed).permutation(len(ids))
    n_val = max(1, int(round(cfg.val * len(ids))))
    n_test = max(1, int(round(cfg.test * len(ids))))
    n_train = len(ids) - n_val - n_test
    if n_train < 1:
        raise ValueError(f"{len(ids)} entries leave no training data with fractions {cfg}")
    shuffled = [ids[i] for i in perm]
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def write_splits(entries_path: str | Path, out_path: str | Path, cfg: SplitConfig) -> dict[str, list[str]]:
    """Stage function: read entries, write ``splits.json`` with the ids and the settings used."""
    ids = pd.read_parquet(entries_path, columns=["material_id"])["material_id"].astype(str).tolist()
    splits = make_splits(ids, cfg)
    payload = {**splits, "settings": cfg.model_dump(), "counts": {k: len(v) for k, v in splits.items()}}
    write_json(payload, out_path)
    log.info("split %d entries: %s", len(ids), payload["counts"])
    return splits


def read_splits(path: str | Path) -> dict[str, list[str]]:
    import json

    with open(path) as fh:
        data = json.load(fh)
    return {k: list(data[k]) for k in ("train", "val", "test")}
