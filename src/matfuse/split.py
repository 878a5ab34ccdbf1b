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
    return sorted((sorted(b) for b in _bundles_in_order(material_ids, groups)), key=lambda b: b[0])


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


def _bundles_in_order(material_ids: list[str], groups: Sequence[str | None] | None) -> list[list[str]]:
    """Ids bundled by group key, bundles in the order of their first id in ``material_ids``."""
    if groups is not None and len(groups) != len(material_ids):
        raise ValueError(f"{len(groups)} group keys for {len(material_ids)} ids")
    bundles: dict[Any, list[str]] = {}
    for i, mid in enumerate(material_ids):
        key = groups[i] if groups is not None and groups[i] is not None else ("id", mid)
        bundles.setdefault(key, []).append(mid)
    return list(bundles.values())


def carve_val(train_ids: list[str], cfg: SplitConfig, group_of: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """Hold out ``cfg.val`` of a training part for validation (seeded with ``cfg.seed``, grouped).

    For splits that name train and test only (k-fold, a benchmark column or file): early stopping and
    model selection then see the training part only, never the test part.
    """
    ids = sorted(train_ids)
    if len(ids) < 2:
        raise ValueError(f"a training part of {len(ids)} entries cannot give validation data")
    bundles = group_ids(ids, [group_of.get(i) for i in ids] if group_of else None)
    perm = np.random.default_rng(cfg.seed).permutation(len(bundles))
    n_val = max(1, int(round(cfg.val * len(ids))))
    val: list[str] = []
    for b in perm:
        if len(val) >= n_val:
            break
        val += bundles[b]
    if len(val) >= len(ids):
        raise ValueError(f"holding out {cfg.val} of {len(ids)} training entries for validation leaves none to train on")
    chosen = set(val)
    return [i for i in ids if i not in chosen], sorted(val)


def kfold_splits(
    material_ids: list[str], cfg: SplitConfig, groups: Sequence[str | None] | None = None
) -> list[dict[str, list[str]]]:
    """``cfg.n_folds`` train/val/test splits: scikit-learn ``KFold`` over the ids in their given order.

    With ``cfg.group`` (and ``groups``), the folds are cut over structure groups (bundles in order of
    first appearance), so identical structures share a fold; with no shared group this is KFold over
    the ids exactly, which is how matbench cuts its folds (``KFold(5, shuffle=True,
    random_state=18012019)`` over the data set in its published order). Validation ids come from
    each fold's training part (:func:`carve_val`).
    """
    from sklearn.model_selection import KFold

    if len(set(material_ids)) != len(material_ids):
        raise ValueError("material ids are not unique")
    bundles = _bundles_in_order(list(material_ids), groups if cfg.group else None)
    if len(bundles) < cfg.n_folds:
        raise ValueError(f"{len(bundles)} entries (structure groups) cannot fill {cfg.n_folds} folds")
    state = cfg.seed if cfg.random_state is None else cfg.random_state
    kf = KFold(n_splits=cfg.n_folds, shuffle=cfg.shuffle, random_state=state if cfg.shuffle else None)
    group_of = ({mid: g for mid, g in zip(material_ids, groups)} if (groups is not None and cfg.group) else None)
    folds = []
    for train_idx, test_idx in kf.split(np.arange(len(bundles))):
        test = sorted(m for k in test_idx for m in bundles[k])
        train, val = carve_val([m for k in train_idx for m in bundles[k]], cfg, group_of)
        folds.append({"train": train, "val": val, "test": test})
    return folds


#: Split names a column or file may use, and what they mean.
LABELS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
          "test": "test", "testing": "test"}


def labelled_splits(
    material_ids: list[str], labels: dict[str, Any], cfg: SplitConfig, groups: Sequence[str | None] | None,
    what: str,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Splits named per id (a column or a file): ``labels`` maps id -> split name.

    Entries with no label or another value stay out of every split (counted in the report, with
    examples); labelled ids that are not entries (e.g. rejected at ingest) are counted too. No
    validation label at all: :func:`carve_val` of the training ids.
    """
    known = set(material_ids)
    sides: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    other: dict[str, int] = {}
    unlabelled = []
    for mid in material_ids:
        raw = labels.get(mid)
        name = LABELS.get(str(raw).strip().lower()) if raw is not None and raw == raw else None
        if name is None:
            if raw is None or raw != raw:
                unlabelled.append(mid)
            else:
                other[str(raw)] = other.get(str(raw), 0) + 1
            continue
        sides[name].append(mid)
    not_entries = sorted(i for i in labels if i not in known)
    report: dict[str, Any] = {
        "from": what, "unlabelled": len(unlabelled), "unlabelled_examples": unlabelled[:5],
        "other_values": other, "labelled_ids_not_in_entries": len(not_entries),
        "labelled_ids_not_in_entries_examples": not_entries[:5], "val_carved_from_train": False,
    }
    if not sides["train"] or not sides["test"]:
        raise ValueError(
            f"{what}: no {'train' if not sides['train'] else 'test'} entries among the {len(material_ids)} "
            f"entries ({len(unlabelled)} have no label; other values: {other or 'none'}; "
            f"{len(not_entries)} labelled ids are not entries, e.g. {not_entries[:3]})"
        )
    if not sides["val"]:
        group_of = dict(zip(material_ids, groups)) if groups is not None and cfg.group else None
        sides["train"], sides["val"] = carve_val(sides["train"], cfg, group_of)
        report["val_carved_from_train"] = True
    if unlabelled or other or not_entries:
        log.warning("%s: %d entries without a split label and %d with another value %s stay out of every split; "
                    "%d labelled ids are not entries (e.g. %s)", what, len(unlabelled), sum(other.values()), other,
                    len(not_entries), not_entries[:3])
    return {k: sorted(v) for k, v in sides.items()}, report


def read_split_file(path: str | Path) -> dict[str, Any]:
    """A user's split file -> {id: split name}: JSON ``{"train": [ids], ...}`` or CSV ``material_id, split``."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    labels: dict[str, Any] = {}
    if path.suffix.lower() == ".json":
        with open(path) as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or not any(isinstance(v, list) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object of split name -> list of ids")
        for name, ids in data.items():
            if not isinstance(ids, list):
                continue
            if LABELS.get(str(name).lower()) is None:
                raise ValueError(f"{path}: unknown split name {name!r} (use train, val, test)")
            for i in ids:
                if str(i) in labels and labels[str(i)] != name:
                    raise ValueError(f"{path}: id {i!r} is in both {labels[str(i)]!r} and {name!r}")
                labels[str(i)] = name
        return labels
    df = pd.read_csv(path, dtype=str)
    missing = [c for c in ("material_id", "split") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: a split CSV needs the columns material_id, split; it has {list(df.columns)}")
    dup = df["material_id"][df["material_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{path}: id {dup.iloc[0]!r} is listed more than once")
    return dict(zip(df["material_id"], df["split"]))


def source_labels(dataset: Any, column: str) -> dict[str, Any]:
    """{material_id: value} of one column of a dataset's source (split kind ``column``)."""
    src = dataset.source
    if src.kind == "table":
        from matfuse.sources.table import column_by_id

        return column_by_id(src, column)
    if src.kind == "jarvis":
        from matfuse.sources.jarvis import load_records

        records, _ = load_records(src.dataset, src.store_dir)
        return {str(r.get("jid")): r.get(column) for r in records if r.get("jid") is not None}
    raise ValueError(f"split kind 'column' needs a table or JARVIS source; {src.kind!r} sources have no split column "
                     "(write the ids of each split to a file and use kind 'file')")


def write_splits(
    entries_path: str | Path, out_path: str | Path, cfg: SplitConfig,
    labels: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Stage function: read entries, write ``splits.json`` with the ids, settings and grouping used.

    ``random`` writes ``train/val/test``; ``kfold`` writes ``folds`` (a list of them); ``column``
    and ``file`` write ``train/val/test`` from ``labels`` (``{"": {id: name}}``), or ``targets``
    (target -> train/val/test) when the column names one split per target (``{target: {id: name}}``).
    Ids are grouped by ``structure_hash`` (identical structures stay on one side of every cut)
    unless ``cfg.group`` is false. Read one split back with :func:`matfuse.data.read_splits`.
    """
    import pyarrow.parquet as pq

    has_hash = "structure_hash" in pq.read_schema(entries_path).names
    cols = ["material_id", "structure_hash"] if has_hash else ["material_id"]
    df = pd.read_parquet(entries_path, columns=cols)
    ids = df["material_id"].astype(str).tolist()
    groups = df["structure_hash"].tolist() if has_hash else None
    if not has_hash:
        log.warning("%s has no structure_hash column: ids are split without grouping identical structures", entries_path)
    report = {"grouped_by": "structure_hash" if has_hash and cfg.group else None, **group_report(ids, groups)}
    payload: dict[str, Any]
    if cfg.kind == "random":
        splits = make_splits(ids, cfg, groups if cfg.group else None)
        payload = {**splits, "counts": {k: len(v) for k, v in splits.items()}}
    elif cfg.kind == "kfold":
        folds = kfold_splits(ids, cfg, groups)
        payload = {"kind": "kfold", "folds": folds, "counts": [{k: len(v) for k, v in f.items()} for f in folds]}
    else:
        if not labels:
            raise ValueError(f"split kind {cfg.kind!r} needs the split labels")
        what = f"split column {cfg.column!r}" if cfg.kind == "column" else f"split file {cfg.path}"
        per = {}
        for target, lab in labels.items():
            splits, rep = labelled_splits(ids, lab, cfg, groups, what.replace("{target}", target) if target else what)
            per[target] = {**splits, "counts": {k: len(v) for k, v in splits.items()}, "labels": rep}
        payload = {"kind": cfg.kind, **per[""]} if list(per) == [""] else {"kind": cfg.kind, "targets": per}
    payload.update(settings=cfg.params(), groups=report)
    write_json(payload, out_path)
    log.info("split %d entries (%s): %s; %d structure groups, %d of them hold several ids (%d ids)",
             len(ids), cfg.kind, payload.get("counts") or {t: v["counts"] for t, v in payload.get("targets", {}).items()},
             report["n_groups"], report["groups_with_several_ids"], report["ids_in_such_groups"])
    return payload


def read_splits(path: str | Path, fold: int | None = None, target: str | None = None) -> dict[str, list[str]]:
    """One train/val/test split of a ``splits.json`` (see :func:`matfuse.data.read_splits`)."""
    from matfuse.data import read_splits as _read

    return _read(path, fold=fold, target=target)


def split_labels(cfg: SplitConfig, dataset: Any) -> dict[str, dict[str, Any]] | None:
    """The per-id split names of kinds ``column`` and ``file`` (``None`` for random and kfold).

    ``{"": {id: name}}`` for one split; ``{target: {id: name}}`` when the column's name holds
    ``{target}`` (replaced by each target's source column / JARVIS key).
    """
    if cfg.kind == "file":
        return {"": read_split_file(cfg.path)}
    if cfg.kind != "column":
        return None
    assert cfg.column is not None
    if "{target}" not in cfg.column:
        return {"": source_labels(dataset, cfg.column)}
    targets = dataset.source.targets
    keys = dict(targets) if isinstance(targets, dict) else {t: t for t in targets}
    return {canon: source_labels(dataset, cfg.column.replace("{target}", key)) for canon, key in keys.items()}


def write_dataset_splits(entries_path: str | Path, out_path: str | Path, params: dict[str, Any]) -> dict[str, Any]:
    """The split rule's stage function: ``params`` = :meth:`SplitConfig.params` (+ ``dataset``, the
    dataset's config, for kind column)."""
    from matfuse.config import DatasetConfig

    params = dict(params)
    dataset = params.pop("dataset", None)
    cfg = SplitConfig.model_validate(params)
    labels = split_labels(cfg, DatasetConfig.model_validate(dataset) if dataset is not None else None)
    return write_splits(entries_path, out_path, cfg, labels)
