"""Metrics from prediction files: ``results/metrics.csv``, a rejects summary and parity plots."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matfuse.io import atomic_path

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "dataset", "train_dataset", "target", "model", "text_encoder", "text_variant", "fold", "n_train", "seed", "split",
    "subset", "n", "n_missing", "mae", "rmse", "r2", "density_kind", "pretrained",
]
#: ``subset`` of the rows over every entry of a split, and of the rows over entries with y_true > 0.
ALL, POSITIVE = "all", "y>0"
#: Constant columns of a predictions file carried into its metrics rows (ECD models).
CARRIED = ("density_kind", "pretrained")

_EXP = r"(?P<dataset>[^/]+)/(?P<target>[^/]+)/(?P<model>[^/]+)/(?P<encoder>[^/]+)/(?P<variant>[^/]+)/(?:fold(?P<fold>\d+)-)?(?:n(?P<n_train>\d+)-)?seed(?P<seed>\d+)\.parquet$"
_PRED_RE = re.compile(r"predictions/(?P<zeroshot>zeroshot/)?" + _EXP)


def parse_prediction_path(path: str | Path) -> dict[str, Any]:
    """Experiment keys encoded in a prediction path (see ``workflow/rules/common.smk``)."""
    m = _PRED_RE.search(Path(path).as_posix())
    if not m:
        raise ValueError(f"not a prediction path: {path}")
    d = m.groupdict()
    return {
        "dataset": d["dataset"],
        "train_dataset": d["dataset"],
        "target": d["target"],
        "model": d["model"],
        "text_encoder": d["encoder"],
        "text_variant": d["variant"],
        "fold": int(d["fold"]) if d.get("fold") else None,
        "n_train": int(d["n_train"]) if d.get("n_train") else None,
        "seed": int(d["seed"]),
        "zero_shot": d["zeroshot"] is not None,
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    err = y_pred - y_true
    mae = float(np.mean(np.abs(err)))
    rmse = float(np.sqrt(np.mean(err**2)))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = float(1.0 - np.sum(err**2) / ss_tot) if ss_tot > 0 else float("nan")
    return {"mae": mae, "rmse": rmse, "r2": r2}


def metrics_rows(pred: pd.DataFrame, keys: dict[str, Any], positive_only: bool = False) -> list[dict[str, Any]]:
    """Rows per split; zero-shot files (with a ``dataset`` column) give one row per evaluation set.

    ``positive_only``: each split also gets a row over the entries whose true value is > 0
    (``subset`` "y>0"; e.g. band gaps of semiconductors, as CGCNN reported them).
    """
    if "dataset" in pred.columns:
        rows = []
        for ds, grp in pred.groupby("dataset", sort=False):
            rows.extend(metrics_rows(grp.drop(columns="dataset"), {**keys, "dataset": str(ds)}, positive_only))
        return rows
    rows = []
    for split, grp in pred.groupby("split", sort=False):
        known = grp["y_true"].notna() & grp["y_pred"].notna()
        n_missing = int((~known).sum())
        if known.sum() == 0:
            log.warning("%s split %s: no entry has a known %s; no metrics", keys["model"], split, keys["target"])
            continue
        split_name = "zeroshot" if keys["zero_shot"] else str(split)
        subsets = [(ALL, known)] + ([(POSITIVE, known & (grp["y_true"] > 0))] if positive_only else [])
        for subset, mask in subsets:
            if mask.sum() == 0:
                continue
            m = regression_metrics(grp.loc[mask, "y_true"].to_numpy(), grp.loc[mask, "y_pred"].to_numpy())
            rows.append({**{k: v for k, v in keys.items() if k != "zero_shot" and k not in CARRIED},
                         **{k: keys.get(k) for k in CARRIED}, "split": split_name, "subset": subset,
                         "n": int(mask.sum()), "n_missing": n_missing, **m})
    return rows


def parity_plot(groups: list[tuple[str, pd.DataFrame]], title: str, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    lo, hi = np.inf, -np.inf
    for label, df in groups:
        df = df.dropna(subset=["y_true", "y_pred"])
        if df.empty:
            continue
        m = regression_metrics(df["y_true"], df["y_pred"])
        ax.scatter(df["y_true"], df["y_pred"], s=8, alpha=0.6, label=f"{label} (MAE {m['mae']:.3f}, R² {m['r2']:.2f})")
        lo = min(lo, df["y_true"].min(), df["y_pred"].min())
        hi = max(hi, df["y_true"].max(), df["y_pred"].max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("DFT (test split)")
    ax.set_ylabel("predicted")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_metrics(
    prediction_paths: list[str],
    reject_paths: list[str],
    metrics_path: str | Path,
    rejects_path: str | Path,
    plot_paths: list[str] | None = None,
    positive_only: list[str] | None = None,
) -> pd.DataFrame:
    """Stage function: one metrics row per experiment and split; rejects summary; parity plots.

    Targets in ``positive_only`` also get rows over their entries with a true value > 0.
    """
    rows: list[dict[str, Any]] = []
    by_plot: dict[tuple[str, str, str], list[tuple[str, pd.DataFrame]]] = {}
    for path in prediction_paths:
        keys = parse_prediction_path(path)
        pred = pd.read_parquet(path)
        for col in CARRIED:
            keys[col] = pred[col].iloc[0] if col in pred.columns and len(pred) else None
        rows.extend(metrics_rows(pred, keys, keys["target"] in set(positive_only or ())))
        if not keys["zero_shot"] and keys["n_train"] is None:
            label = keys["model"] if keys["text_encoder"] == "none" else f"{keys['text_encoder']}/{keys['text_variant']}"
            label += ("" if keys["fold"] is None else f" f{keys['fold']}") + f" s{keys['seed']}"
            by_plot.setdefault((keys["dataset"], keys["target"], keys["model"]), []).append(
                (label, pred[pred["split"] == "test"])
            )
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    metrics = metrics.sort_values(["dataset", "train_dataset", "target", "model", "text_encoder", "text_variant",
                                   "fold", "n_train", "seed", "split", "subset"], na_position="first")
    metrics["n_train"] = metrics["n_train"].astype("Int64")
    metrics["fold"] = metrics["fold"].astype("Int64")
    with atomic_path(metrics_path) as tmp:
        metrics.to_csv(tmp, index=False, float_format="%.6g")
    log.info("wrote %d metric rows from %d prediction files", len(metrics), len(prediction_paths))

    frames = []
    for p in reject_paths:
        df = pd.read_parquet(p)
        m = re.search(r"results/[^/]+/([^/]+)/", Path(p).as_posix())
        df.insert(0, "dataset", m.group(1) if m else Path(p).parent.name)
        frames.append(df)
    rejects = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["dataset", "material_id", "stage", "reason"])
    with atomic_path(rejects_path) as tmp:
        rejects.to_csv(tmp, index=False)
    if len(rejects):
        log.info("rejects by dataset/stage: %s", rejects.groupby(["dataset", "stage"]).size().to_dict())

    for path in plot_paths or []:
        parts = Path(path).parts
        ds, target, model = parts[-3], parts[-2], Path(path).stem
        groups = by_plot.get((ds, target, model), [])
        parity_plot(groups, f"{ds} · {target} · {model}", path)
    return metrics
