"""Predictions of a trained model (``train.py``'s ``model_dir``) on an entries table.

Output Parquet: ``material_id`` (str), ``split`` (str), ``y_true`` (float64, null where the
entries table has no value or no such column), ``y_pred`` (float64, null where the material
lacks a model input — a graph rejected at the graph stage or a missing text embedding; these
are counted in the log).  Predictions are computed in float32 on the chosen device and written
as float64 on the CPU, so the table has the same format whichever device ran it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from matfuse.data import build_data, load_inputs, make_loader, read_splits, read_target, read_tokens, text_dim
from matfuse.io import write_parquet
from matfuse.models import model_inputs
from matfuse.kit import load_checkpoint, resolve_device
from matfuse.train import evaluate

log = logging.getLogger(__name__)

PRED_SCHEMA = pa.schema(
    [("material_id", pa.string()), ("split", pa.string()), ("y_true", pa.float64()), ("y_pred", pa.float64())]
)


def predict(
    model_dir: str | Path,
    entries_path: str | Path,
    splits_path: str | Path | None,
    graphs_path: str | Path | None,
    embeddings_path: str | Path | None,
    out_path: str | Path,
    split_names: Sequence[str] = ("train", "val", "test"),
    device: str = "auto",
    batch_size: int = 256,
    n_train: int | None = None,
    fold: int | None = None,
    texts_path: str | Path | None = None,
    variant: str | None = None,
) -> pd.DataFrame:
    """Predict the checkpoint's target for the entries in ``split_names`` (or all of them).

    ``texts_path`` / ``variant``: texts table and variant of a model that fine-tuned its text
    encoder (tokenised with the tokenizer and length the checkpoint names).

    ``splits_path=None`` scores every entry as split ``"all"`` (zero-shot evaluation of a model
    trained elsewhere); the target column is then optional. ``n_train``: the model was trained on
    that many entries of the training split (``train_sizes``); the other training entries are
    scored as split ``"train_unused"``, so the ``train`` rows are the ones it saw. ``fold``: the
    fold of a k-fold split file the model was trained on. Returns the written frame.
    """
    dev = resolve_device(device)
    model, ckpt = load_checkpoint(Path(model_dir) / "model.pt", dev)
    meta = ckpt["metadata"]
    target = meta["target"]
    name = ckpt["model"]["name"]
    mean, std = ckpt["normalizer"]["mean"], ckpt["normalizer"]["std"]
    inputs = model_inputs(name)

    try:
        targets = read_target(entries_path, target)
    except KeyError:
        if splits_path is not None:
            raise
        log.info("%s has no %r column: y_true is null (zero-shot without labels)", entries_path, target)
        targets = read_target(entries_path, None)

    if splits_path is None:
        ids = targets["material_id"].tolist()
        split_of = ["all"] * len(ids)
    else:
        splits = read_splits(splits_path, fold=fold, target=target)
        ids, split_of = [], []
        for split in split_names:
            if split not in splits:
                raise ValueError(f"{splits_path}: no split {split!r} (has {sorted(splits)})")
            ids += splits[split]
            split_of += [split] * len(splits[split])
    y_by_id = dict(zip(targets["material_id"], targets["y"]))
    absent = [i for i in ids if i not in y_by_id]
    if absent:
        raise ValueError(f"{len(absent)} split ids are not in {entries_path}, e.g. {absent[0]!r}")
    y_true = np.array([y_by_id[i] for i in ids], dtype=np.float64)
    if n_train is not None and splits_path is not None:
        from matfuse.train import training_subset

        known = [i for i, s, y in zip(ids, split_of, y_true) if s == "train" and not np.isnan(y)]
        used = set(training_subset(known, n_train))
        split_of = ["train_unused" if s == "train" and i not in used else s for i, s in zip(ids, split_of)]

    graphs, embeddings = load_inputs(inputs, graphs_path, embeddings_path)
    want = meta.get("text_dim")
    have = text_dim(embeddings)
    if "text" in inputs and want is not None and have != want:
        raise ValueError(f"{embeddings_path}: embeddings have width {have}, the model was trained on {want}")
    tokens = None
    if "tokens" in inputs:
        if texts_path is None or variant is None:
            raise ValueError(f"{model_dir}: model {name!r} reads text tokens: give the texts table and the variant")
        text_cfg = ckpt["model"]["text"]
        tokens = read_tokens(texts_path, variant, text_cfg["encoder"], int(text_cfg["max_length"]))
    data, missing = build_data(ids, y_true, inputs, graphs, embeddings, tokens)
    if missing:
        log.warning(
            "%d of %d materials have no prediction (missing input), e.g. %s",
            len(missing), len(ids), "; ".join(f"{m['material_id']}: {m['reason']}" for m in missing[:5]),
        )
    y_pred = np.full(len(ids), np.nan)
    if data:
        loader = make_loader(data, batch_size, shuffle=False, pin_memory=dev.type == "cuda")
        pred, idx = evaluate(model, loader, dev, mean, std)
        y_pred[idx] = pred
    df = pd.DataFrame(
        {
            "material_id": pd.Series(ids, dtype="string"),
            "split": pd.Series(split_of, dtype="string"),
            "y_true": pd.array(y_true, dtype="Float64"),
            "y_pred": pd.array(y_pred, dtype="Float64"),
        }
    )
    # NaN -> null in Parquet (pandas nullable Float64 keeps them distinct from numbers)
    df["y_true"] = df["y_true"].mask(np.isnan(y_true))
    df["y_pred"] = df["y_pred"].mask(np.isnan(y_pred))
    table = pa.Table.from_pandas(df, schema=PRED_SCHEMA, preserve_index=False)
    write_parquet(table, out_path)
    known = ~np.isnan(y_true) & ~np.isnan(y_pred)
    for split in dict.fromkeys(split_of):
        sel = known & (np.asarray(split_of) == split)
        if sel.any():
            log.info(
                "%s %s/%s: n=%d MAE %.4f", split, name, target, int(sel.sum()),
                float(np.mean(np.abs(y_pred[sel] - y_true[sel]))),
            )
    return df


def seed_ensemble(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1; null for one member) over seed predictions of the same rows.

    Frames are predictions files (material_id, split, y_true, y_pred); the result has ``y_pred``
    (mean over the members that predicted the row), ``y_std`` and ``n_members``.
    """
    if not frames:
        raise ValueError("an ensemble needs at least one predictions file")
    base = frames[0][["material_id", "split", "y_true"]].reset_index(drop=True)
    preds = []
    for k, f in enumerate(frames):
        f = f.reset_index(drop=True)
        if len(f) != len(base) or not (f["material_id"].astype(str) == base["material_id"].astype(str)).all():
            raise ValueError(f"ensemble member {k} does not predict the same entries in the same order")
        preds.append(pd.to_numeric(f["y_pred"], errors="coerce").to_numpy(dtype=float))
    p = np.vstack(preds)
    finite = np.isfinite(p)
    n = finite.sum(axis=0)
    mean = np.where(n > 0, np.where(finite, p, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
    sq = np.where(finite, p - mean, 0.0) ** 2
    std = np.where(n > 1, np.sqrt(sq.sum(axis=0) / np.maximum(n - 1, 1)), np.nan)
    out = base.copy()
    out["y_pred"] = pd.Series(mean).astype("Float64").mask(~np.isfinite(mean))
    out["y_std"] = pd.Series(std).astype("Float64").mask(~np.isfinite(std))
    out["n_members"] = n.astype("int32")
    return out


def calibration(y_true: Any, y_pred: Any, y_std: Any) -> dict[str, float | int | None]:
    """Error against ensemble spread over the rows that have all three: n, MAE, mean std and the
    shares of errors within 1 and 2 std (a calibrated Gaussian gives 68 % and 95 %)."""
    t, p, s = (np.asarray(pd.to_numeric(pd.Series(v), errors="coerce"), dtype=float) for v in (y_true, y_pred, y_std))
    ok = np.isfinite(t) & np.isfinite(p) & np.isfinite(s)
    if not ok.any():
        return {"n": 0, "mae": None, "mean_std": None, "within_1std": None, "within_2std": None}
    err, s = np.abs(p[ok] - t[ok]), s[ok]
    return {"n": int(ok.sum()), "mae": float(err.mean()), "mean_std": float(s.mean()),
            "within_1std": float(np.mean(err <= s)), "within_2std": float(np.mean(err <= 2 * s))}


def write_ensemble(prediction_paths: Sequence[str | Path], out_path: str | Path) -> pd.DataFrame:
    """Stage function: the seed ensemble of one experiment's predictions files (:func:`seed_ensemble`).

    Output Parquet: ``material_id, split, y_true, y_pred`` (mean over seeds), ``y_std`` (their standard
    deviation, ddof 1), ``n_members`` (seeds that predicted the row).
    """
    out = seed_ensemble([pd.read_parquet(p) for p in prediction_paths])
    schema = pa.schema([*PRED_SCHEMA, ("y_std", pa.float64()), ("n_members", pa.int32())])
    write_parquet(pa.Table.from_pandas(out, schema=schema, preserve_index=False), out_path)
    test = out[out["split"] == "test"]
    cal = calibration(test["y_true"], test["y_pred"], test["y_std"])
    if cal["n"]:
        log.info("ensemble of %d: test MAE %.4f; %.0f %% of test errors within 1 std, %.0f %% within 2",
                 len(prediction_paths), cal["mae"], 100 * cal["within_1std"], 100 * cal["within_2std"])
    return out
