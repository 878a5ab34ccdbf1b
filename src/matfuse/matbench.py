"""Matbench v0.1 results files from k-fold runs, and the matbench_jdft2d leaderboard beside ours.

A results file is what ``MatbenchBenchmark.to_file`` of the ``matbench`` package (0.6) writes:
``{"@module", "@class", "version", "tasks": {task: {"@module", "@class", "benchmark_name",
"dataset_name", "results": {"fold_<k>": {"data": {mbid: prediction}, "uncertainty": {mbid:
{"ci_lower", "ci_upper", "std"}} or null, "parameters": {...}, "scores": {"mae", "rmse", "mape",
"max_error"}}}}}, "user_metadata", "benchmark_name", "datestamp", "hash"}``, the hash being
matbench's own (sha256 of the key-sorted JSON of everything else), so ``MatbenchBenchmark.from_file``
loads and validates it. Predictions of a seed ensemble are the mean over seeds with their standard
deviation as the uncertainty (95 % normal interval, as ``MatbenchTask.record`` derives it from a std).

The folds are matbench's: ``KFold(5, shuffle=True, random_state=18012019)`` over the data set in its
published order (mbid ``mb-<task>-<1-based index>``, zero-padded to the width of the size). The
record is refused, naming the ids, when the run's test folds are not exactly those.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from matfuse.io import atomic_path
from matfuse.predict import seed_ensemble

log = logging.getLogger(__name__)

#: Size of each matbench v0.1 regression task (from matbench 0.6's matbench_v0.1_validation.json).
#: The three classification tasks (expt_is_metal, glass, mp_is_metal) use stratified folds: not here.
MATBENCH_V01: dict[str, int] = {
    "matbench_dielectric": 4764, "matbench_expt_gap": 4604, "matbench_jdft2d": 636, "matbench_log_gvrh": 10987,
    "matbench_log_kvrh": 10987, "matbench_mp_e_form": 132752, "matbench_mp_gap": 106113,
    "matbench_perovskites": 18928, "matbench_phonons": 1265, "matbench_steels": 312,
}
#: matbench v0.1's folds (its validation metadata).
KFOLD = {"n_splits": 5, "shuffle": True, "random_state": 18012019}
BENCHMARK, VERSION = "matbench_v0.1", "0.6"


def mbid(task: str, index: int) -> str:
    """The matbench id of the entry at 0-based position ``index`` of ``task`` (e.g. mb-jdft2d-001)."""
    n = MATBENCH_V01[task]
    if not 0 <= index < n:
        raise ValueError(f"{task} has {n} entries; no index {index}")
    return f"{task.replace('matbench', 'mb').replace('_', '-')}-{index + 1:0{len(str(n))}d}"


def index_of(material_id: str) -> int:
    """The 0-based matbench position of an entry: the trailing integer of its id (e.g. jdft2d-17 -> 17)."""
    m = re.search(r"(\d+)$", str(material_id))
    if not m:
        raise ValueError(f"id {material_id!r} does not end in its matbench index")
    return int(m.group(1))


def matbench_folds(task: str) -> list[list[str]]:
    """The test mbids of each matbench fold of ``task``."""
    from sklearn.model_selection import KFold

    n = MATBENCH_V01[task]
    kf = KFold(n_splits=KFOLD["n_splits"], shuffle=KFOLD["shuffle"], random_state=KFOLD["random_state"])
    return [[mbid(task, int(i)) for i in test] for _, test in kf.split(np.arange(n))]


def _immutify(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _immutify(v)
        elif isinstance(v, np.ndarray):
            out[k] = v.tolist()
        elif isinstance(v, (list, tuple)):
            out[k] = list(v)
        elif hasattr(v, "item"):
            out[k] = v.item()
        else:
            out[k] = v
    return dict(sorted(out.items(), key=lambda kv: kv[0]))


def hash_dictionary(d: dict[str, Any]) -> str:
    """matbench's hash of a results dict: sha256 of the JSON of the recursively key-sorted dict."""
    return hashlib.sha256(json.dumps(_immutify(d)).encode("utf-8")).hexdigest()


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """matbench's regression scores of one fold: scikit-learn MAE, RMSE and max error, and matbench's
    own MAPE (entries with |y_true| <= 1e-5 left out)."""
    from sklearn.metrics import max_error, mean_absolute_error, mean_squared_error

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    mask = np.abs(y_true) > 1e-5
    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "mape": float(np.mean(np.fabs((y_true[mask] - y_pred[mask]) / y_true[mask]))),
        "max_error": float(max_error(y_true, y_pred)),
    }


def record(
    task: str, folds: Sequence[pd.DataFrame], parameters: dict[str, Any] | None = None,
    user_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The results dict of one algorithm on ``task``.

    ``folds``: per matbench fold, the test predictions with columns ``mbid``, ``y_true``, ``y_pred``
    and optionally ``y_std``; each must hold exactly matbench's test ids of that fold.
    """
    expected = matbench_folds(task)
    if len(folds) != len(expected):
        raise ValueError(f"{task} has {len(expected)} folds; got predictions for {len(folds)}")
    results: dict[str, Any] = {}
    for k, (df, want) in enumerate(zip(folds, expected)):
        have = set(df["mbid"])
        missing, extra = sorted(set(want) - have), sorted(have - set(want))
        if missing or extra:
            raise ValueError(f"fold {k}: the test predictions are not matbench's test fold: {len(missing)} missing "
                             f"(e.g. {missing[:3]}), {len(extra)} not in it (e.g. {extra[:3]})")
        df = df.set_index("mbid").loc[want]
        y_pred = pd.to_numeric(df["y_pred"], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(y_pred).all():
            bad = [m for m, v in zip(want, y_pred) if not np.isfinite(v)]
            raise ValueError(f"fold {k}: {len(bad)} test entries have no prediction (e.g. {bad[:3]}); matbench "
                             "needs one for every test entry")
        y_true = pd.to_numeric(df["y_true"], errors="coerce").to_numpy(dtype=float)
        uncertainty = None
        if "y_std" in df.columns and pd.to_numeric(df["y_std"], errors="coerce").notna().all():
            from scipy import stats

            std = pd.to_numeric(df["y_std"]).to_numpy(dtype=float)
            lo = stats.norm.ppf(0.025, loc=y_pred, scale=std)
            hi = stats.norm.ppf(0.975, loc=y_pred, scale=std)
            uncertainty = {m: {"ci_lower": float(a), "ci_upper": float(b), "std": float(s)}
                           for m, a, b, s in zip(want, lo, hi, std)}
        results[f"fold_{k}"] = {
            "data": {m: float(v) for m, v in zip(want, y_pred)},
            "uncertainty": uncertainty,
            "parameters": _immutify(parameters or {}),
            "scores": scores(y_true, y_pred),
        }
    d: dict[str, Any] = {
        "@module": "matbench.bench",
        "@class": "MatbenchBenchmark",
        "version": VERSION,
        "tasks": {task: {"@module": "matbench.task", "@class": "MatbenchTask", "benchmark_name": BENCHMARK,
                         "dataset_name": task, "results": results}},
        "user_metadata": _immutify(user_metadata or {}),
        "benchmark_name": BENCHMARK,
        "datestamp": datetime.now(timezone.utc).strftime("%Y.%m.%d %H:%M.%S"),
    }
    d["tasks"] = _immutify(d["tasks"])
    d["hash"] = hash_dictionary(d)
    return d


def check_folds(task: str, splits_path: str | Path) -> None:
    """Raise unless the k-fold split file's test folds are exactly matbench's (by matbench index)."""
    with open(splits_path) as fh:
        payload = json.load(fh)
    if "folds" not in payload:
        raise ValueError(f"{splits_path} is not a k-fold split (split kind kfold with matbench's settings is needed)")
    expected = matbench_folds(task)
    if len(payload["folds"]) != len(expected):
        raise ValueError(f"{splits_path} holds {len(payload['folds'])} folds; matbench has {len(expected)}")
    for k, (fold, want) in enumerate(zip(payload["folds"], expected)):
        have = {mbid(task, index_of(i)) for i in fold["test"]}
        if have != set(want):
            diff = sorted(have ^ set(want))
            raise ValueError(
                f"{splits_path}: test fold {k} is not matbench's ({len(diff)} ids differ, e.g. {diff[:3]}). Matbench "
                f"folds need split kind kfold, n_folds 5, shuffle true, random_state 18012019, group false, and "
                f"every entry of the data set in its published order (an ingest reject shifts them)"
            )


def write_record(
    task: str, splits_path: str | Path, fold_files: Sequence[Sequence[str | Path]], out_path: str | Path,
    parameters: dict[str, Any] | None = None, user_metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage function: the results file (gzipped JSON) of one model from its fold prediction files.

    ``fold_files[k]`` are the predictions files of fold ``k`` (one per seed: their mean and standard
    deviation are recorded). Returns the per-fold scores.
    """
    check_folds(task, splits_path)
    folds = []
    for k, files in enumerate(fold_files):
        ens = seed_ensemble([pd.read_parquet(p) for p in files])
        test = ens[ens["split"] == "test"]
        folds.append(pd.DataFrame({"mbid": [mbid(task, index_of(i)) for i in test["material_id"]],
                                   "y_true": test["y_true"].to_numpy(dtype=float, na_value=np.nan),
                                   "y_pred": test["y_pred"].to_numpy(dtype=float, na_value=np.nan),
                                   "y_std": test["y_std"].to_numpy(dtype=float, na_value=np.nan)}))
    d = record(task, folds, parameters, user_metadata)
    with atomic_path(out_path) as tmp:
        with gzip.open(tmp, "wt") as fh:
            json.dump(d, fh)
    fold_scores = {k: v["scores"] for k, v in d["tasks"][task]["results"].items()}
    maes = [s["mae"] for s in fold_scores.values()]
    log.info("%s: fold MAEs %s; mean %.4f ± %.4f; wrote %s", task, [round(m, 4) for m in maes],
             np.mean(maes), np.std(maes), out_path)
    return fold_scores


def write_summary(task: str, record_paths: Sequence[str | Path], out_path: str | Path) -> pd.DataFrame:
    """Stage function: our models' fold MAEs (mean ± std over folds, as matbench ranks them: numpy's
    population std) beside the published leaderboard of ``task``, as Markdown."""
    from matfuse.published import MATBENCH_LEADERBOARDS

    rows = []
    for p in record_paths:
        with gzip.open(p, "rt") as fh:
            d = json.load(fh)
        res = d["tasks"][task]["results"]
        maes = np.array([res[f"fold_{k}"]["scores"]["mae"] for k in range(len(res))])
        params = res["fold_0"]["parameters"]
        stds = [v["std"] for f in res.values() if f.get("uncertainty") for v in f["uncertainty"].values()]
        rows.append({"model": params.get("label", Path(p).parent.as_posix()), "seeds": params.get("seeds"),
                     "mae_mean": float(maes.mean()), "mae_std": float(maes.std()),
                     "folds": " / ".join(f"{m:.2f}" for m in maes), "mean_seed_std": float(np.mean(stds)) if stds else None,
                     "record": Path(p).as_posix()})
    table = pd.DataFrame(rows).sort_values("mae_mean") if rows else pd.DataFrame(rows)
    lines = [f"## {task}: 5-fold MAE (matbench's folds), ours beside the leaderboard", "",
             "| model | MAE, mean ± std over folds | fold MAEs | seeds per fold | results file |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| **{r.model}** (matfuse) | {r.mae_mean:.2f} ± {r.mae_std:.2f} | {r.folds} | {r.seeds} | `{r.record}` |")
    for name, value in MATBENCH_LEADERBOARDS.get(task, []):
        lines.append(f"| {name} (leaderboard) | {value} | | | |")
    lines += ["", "Leaderboard rows: matbench v0.1 leaderboard as collected in ../shared/papers/published.md. "
              "Ours: the mean over seeds of each fold's test predictions (the prediction in the results file), "
              "validation data taken from each fold's training part only; std over folds as matbench computes it "
              "(numpy, ddof 0).", ""]
    with atomic_path(out_path) as tmp:
        Path(tmp).write_text("\n".join(lines))
    return table
