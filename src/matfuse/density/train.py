"""Training of the charge-density image models (ecd_cnn, ecd_inception, ecd_text) with the kit.

Conventions: image and target normalisation statistics come from the training split only;
early stopping and model selection use the validation split only (:func:`matfuse.kit.fit`);
the test split is only predicted. Checkpoints are the kit's one format
(:func:`matfuse.kit.save_checkpoint`: constructor config + weights + normalisation
``x_mean, x_std, y_mean, y_std`` + metadata ``target, pretrained``), read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from matfuse.density.config import EcdModelConfig, EcdTrainConfig
from matfuse.evaluate import regression_metrics
from matfuse.io import write_json, write_parquet
from matfuse.kit import finite_or, fit, load_checkpoint, predict_in_batches, resolve_device, save_checkpoint, seed_everything
from matfuse.models import build_model
from matfuse.models.ecd_cnn import EcdCNNConfig
from matfuse.models.ecd_inception import EcdInceptionConfig
from matfuse.models.ecd_text import EcdTextConfig
from matfuse.registry import names

log = logging.getLogger(__name__)

ECD_MODELS = names("density")


@dataclass
class EcdData:
    """Images aligned with ids; ``y`` NaN where unknown; ``text`` (N, D) for ecd_text."""

    ids: list[str]
    images: np.ndarray  # (N, H, W) float32
    y: np.ndarray  # (N,) float64
    text: np.ndarray | None = None

    def index(self, ids: list[str]) -> np.ndarray:
        pos = {m: i for i, m in enumerate(self.ids)}
        missing = [m for m in ids if m not in pos]
        if missing:
            raise KeyError(f"{len(missing)} split ids have no image, e.g. {missing[0]!r}")
        return np.asarray([pos[m] for m in ids], dtype=np.int64)


def model_ctor(name: str, mcfg: EcdModelConfig, image_size: tuple[int, int], text_dim: int | None) -> dict[str, Any]:
    """Constructor arguments of model ``name`` (what the checkpoint stores)."""
    if name == "ecd_cnn":
        return EcdCNNConfig(image_size=tuple(image_size), channels=list(mcfg.cnn_channels), dense=mcfg.cnn_dense, dropout=mcfg.dropout).to_dict()
    if name == "ecd_inception":
        return EcdInceptionConfig(dropout=mcfg.dropout, weights_path=mcfg.inception_weights).to_dict()
    if name == "ecd_text":
        if not text_dim:
            raise ValueError("ecd_text needs text embeddings")
        image_cfg = model_ctor(mcfg.text_image_model, mcfg, image_size, None)
        return EcdTextConfig(text_dim=int(text_dim), image_model=mcfg.text_image_model, image_cfg=image_cfg, hidden=mcfg.text_hidden, dropout=mcfg.dropout).to_dict()
    raise ValueError(f"unknown ECD model {name!r} (known: {ECD_MODELS})")


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal/vertical flips and 90° rotations, per sample (square images only)."""
    out = []
    for img in x:
        if torch.rand((), generator=gen) < 0.5:
            img = torch.flip(img, dims=(-1,))
        if torch.rand((), generator=gen) < 0.5:
            img = torch.flip(img, dims=(-2,))
        if img.shape[-1] == img.shape[-2]:
            k = int(torch.randint(0, 4, (), generator=gen))
            img = torch.rot90(img, k, dims=(-2, -1))
        out.append(img)
    return torch.stack(out)


def _forward(model: nn.Module, x: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    return model(x, t) if model.name == "ecd_text" else model(x)


def _image_batches(x: np.ndarray, t: np.ndarray | None, norm: dict[str, float], bs: int, dev: torch.device):
    for i in range(0, len(x), bs):
        xb = torch.from_numpy((x[i : i + bs] - norm["x_mean"]) / norm["x_std"]).float().unsqueeze(1).to(dev)
        tb = torch.from_numpy(t[i : i + bs]).float().to(dev) if t is not None else None
        yield xb, tb


def _predict(model: nn.Module, x: np.ndarray, t: np.ndarray | None, norm: dict[str, float], bs: int, dev: torch.device) -> np.ndarray:
    pred = predict_in_batches(model, _image_batches(x, t, norm, bs, dev), lambda b: _forward(model, *b))
    return pred * norm["y_std"] + norm["y_mean"]


def recalibrate_batchnorm(
    model: nn.Module, x: np.ndarray, t: np.ndarray | None, norm: dict[str, float], bs: int, dev: torch.device
) -> bool:
    """Recompute BatchNorm running statistics of the final weights over the training images.

    BatchNorm layers evaluate with running averages that lag behind the weights (momentum 0.1);
    after few updates (small data, few epochs, random-init InceptionV3) eval-mode outputs can be
    off by orders of magnitude. As ``torch.optim.swa_utils.update_bn`` does, the statistics are
    reset and re-estimated as plain averages over one pass (no gradients, no augmentation).
    Returns False (nothing done) for models without BatchNorm.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or len(x) < 2:
        return False
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    bs = max(bs, 2)
    with torch.no_grad():
        for i, (xb, tb) in zip(range(0, len(x), bs), _image_batches(x, t, norm, bs, dev)):
            if len(x) - i < 2:  # a single sample cannot give batch statistics at 1x1 maps
                break
            _forward(model, xb, tb)
    for m, mom in momenta.items():
        m.momentum = mom
    model.eval()
    return True


def train_ecd(
    data: EcdData,
    splits: dict[str, list[str]],
    model_name: str,
    mcfg: EcdModelConfig,
    tcfg: EcdTrainConfig,
    checkpoint_path: str | Path | None = None,
    target: str = "",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train one model; return (predictions for every split id, metrics/training record).

    Predictions: material_id, split, y_true, y_pred (target units). Entries with unknown ``y``
    are not trained on but are still predicted. The model with the best validation MAE is kept
    and its BatchNorm statistics re-estimated on the training images
    (:func:`recalibrate_batchnorm`) before the final predictions. Raises ``ValueError`` when
    train or val has no labelled entry.
    """
    seed_everything(tcfg.seed)
    gen = torch.Generator().manual_seed(tcfg.seed)
    rng = np.random.default_rng(tcfg.seed)
    dev = resolve_device(tcfg.device)
    idx = {s: data.index(ids) for s, ids in splits.items() if isinstance(ids, list)}
    lab = {s: i[np.isfinite(data.y[i])] for s, i in idx.items()}
    for s in ("train", "val"):
        if s not in lab or len(lab[s]) == 0:
            raise ValueError(f"split {s!r} has no labelled entry")
    tr, va = lab["train"], lab["val"]
    x_tr = data.images[tr]
    norm = {
        "x_mean": float(x_tr.mean()),
        "x_std": finite_or(float(x_tr.std())),
        "y_mean": float(data.y[tr].mean()),
        "y_std": finite_or(float(data.y[tr].std())),
    }
    text_dim = None if data.text is None else int(data.text.shape[1])
    ctor = model_ctor(model_name, mcfg, tuple(data.images.shape[1:]), text_dim)
    model = build_model(model_name, **ctor).to(dev)
    pretrained = bool(getattr(model, "pretrained", False))
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    loss_fn = nn.MSELoss()
    xn = ((data.images - norm["x_mean"]) / norm["x_std"]).astype(np.float32)
    yn = ((data.y - norm["y_mean"]) / norm["y_std"]).astype(np.float32)
    has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    text_of = (lambda i: None) if data.text is None else (lambda i: data.text[i])

    def batches() -> list[np.ndarray]:
        perm = rng.permutation(tr)
        return [perm[i : i + tcfg.batch_size] for i in range(0, len(perm), tcfg.batch_size)]

    def loss_of(b: np.ndarray) -> tuple[torch.Tensor, int] | None:
        if len(b) < 2 and has_bn:
            return None  # BatchNorm cannot train on a single sample
        xb = torch.from_numpy(xn[b]).unsqueeze(1)
        if tcfg.augment:
            xb = augment_batch(xb, gen)
        tb = torch.from_numpy(data.text[b]).float().to(dev) if data.text is not None else None
        pred = _forward(model, xb.to(dev), tb)
        return loss_fn(pred, torch.from_numpy(yn[b]).to(dev)), len(b)

    def validate() -> float:
        val_pred = _predict(model, data.images[va], text_of(va), norm, tcfg.batch_size, dev)
        return float(np.mean(np.abs(val_pred - data.y[va])))

    result = fit(
        model, opt, epochs=tcfg.epochs, patience=tcfg.patience, batches=batches, loss_of=loss_of,
        validate=validate, desc=f"{model_name}/{target or 'y'}", keep_initial=True,
    )
    recalibrated = tcfg.recalibrate_bn and recalibrate_batchnorm(model, data.images[tr], text_of(tr), norm, tcfg.batch_size, dev)
    rows = []
    for s, i in idx.items():
        p = _predict(model, data.images[i], text_of(i), norm, tcfg.batch_size, dev)
        rows += [{"material_id": data.ids[j], "split": s, "y_true": float(data.y[j]), "y_pred": float(v)} for j, v in zip(i, p)]
    pred_df = pd.DataFrame(rows, columns=["material_id", "split", "y_true", "y_pred"])
    metrics: dict[str, Any] = {
        "model": model_name,
        "target": target,
        "pretrained": pretrained,
        "best_epoch": result.best_epoch,
        "bn_recalibrated": recalibrated,
        "epochs_run": result.epochs_run,
        "best_val_mae": result.best_val_mae,
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "norm": norm,
        "history": result.history,
    }
    for s, grp in pred_df.groupby("split"):
        known = grp["y_true"].notna()
        if known.sum():
            metrics[s] = regression_metrics(grp.loc[known, "y_true"].to_numpy(), grp.loc[known, "y_pred"].to_numpy())
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, model, norm, {"target": target, "pretrained": pretrained})
    return pred_df, metrics


def predict_checkpoint(path: str | Path, images: np.ndarray, text: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
    """Predictions (target units) of a saved model for images (N, H, W)."""
    model, ckpt = load_checkpoint(path)
    return _predict(model, images.astype(np.float32), text, ckpt["normalizer"], batch_size, torch.device("cpu"))


def kfold_splits(ids: list[str], k: int, seed: int = 0) -> list[dict[str, list[str]]]:
    """k folds over ``ids`` (seeded): each fold is {"train": ..., "val": ...}; every id is val once."""
    if k < 2 or k > len(ids):
        raise ValueError(f"k-fold needs 2 <= k <= {len(ids)}, got {k}")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    folds = [order[i::k] for i in range(k)]
    return [{"train": sorted(m for j, f in enumerate(folds) if j != i for m in f), "val": sorted(folds[i])} for i in range(k)]


def train_ecd_kfold(data: EcdData, splits: dict[str, list[str]], model_name: str, mcfg: EcdModelConfig, tcfg: EcdTrainConfig, target: str = "") -> tuple[pd.DataFrame, dict[str, Any]]:
    """k-fold CV over train+val (``tcfg.kfold`` folds); the test split is predicted by every fold's model.

    Returns out-of-fold validation predictions (split="val", fold column) plus test predictions
    (split="test", fold column), and per-fold metrics with their mean.
    """
    pool = sorted(set(splits.get("train", [])) | set(splits.get("val", [])))
    preds, per_fold = [], []
    for f, fold in enumerate(kfold_splits(pool, int(tcfg.kfold or 0), tcfg.seed)):
        fold_splits = dict(fold)
        if splits.get("test"):
            fold_splits["test"] = list(splits["test"])
        p, m = train_ecd(data, fold_splits, model_name, mcfg, tcfg, None, target)
        p = p[p["split"] != "train"].assign(fold=f)
        preds.append(p)
        per_fold.append({k: m[k] for k in ("best_epoch", "best_val_mae") } | {s: m.get(s) for s in ("val", "test")})
    out = pd.concat(preds, ignore_index=True)
    summary = {"model": model_name, "target": target, "k": len(per_fold), "folds": per_fold,
               "cv_val_mae_mean": float(np.mean([f["best_val_mae"] for f in per_fold]))}
    return out, summary


def train_ecd_stage(
    slices_path: str | Path,
    entries_path: str | Path,
    splits_path: str | Path,
    target: str,
    model_name: str,
    mcfg: EcdModelConfig,
    tcfg: EcdTrainConfig,
    checkpoint_path: str | Path,
    predictions_path: str | Path,
    metrics_path: str | Path,
    embeddings_path: str | Path | None = None,
) -> dict[str, Any]:
    """Stage: slices + targets (+ text embeddings) + splits -> checkpoint, predictions, metrics.

    With ``tcfg.kfold`` the k-fold CV predictions are written to ``cv_predictions.parquet`` beside
    ``metrics_path``; the predictions file holds the final (train/val) model's.
    Split ids without an image (rejected or unselected densities) are dropped from the splits and
    counted in the metrics (``n_without_image``); for ecd_text, images without a text embedding
    (robocrys failures) are dropped too (``n_without_text``, ids listed). The predictions carry
    two constant columns for the metrics table: ``density_kind`` (total/spin/valence) and
    ``pretrained`` (False = ImageNet weights were not loaded: random initialisation).
    """
    from matfuse.data import read_embeddings, read_splits, read_target
    from matfuse.density.stage import read_slices

    meta, images = read_slices(slices_path)
    ids = meta["material_id"].astype(str).tolist()
    if not ids:
        raise ValueError(f"{slices_path}: no density image (see the density rejects)")
    text = None
    without_text: list[str] = []
    if model_name == "ecd_text":
        if embeddings_path is None:
            raise ValueError("ecd_text needs an embeddings file")
        emb = read_embeddings(embeddings_path)
        without_text = [m for m in ids if m not in emb]
        if without_text:
            log.warning("%s: %d images have no text embedding (dropped): %s", embeddings_path, len(without_text), without_text[:5])
            keep = np.asarray([m in emb for m in ids])
            ids = [m for m in ids if m in emb]
            images = images[keep]
        if not ids:
            raise ValueError(f"{embeddings_path}: no image has a text embedding (see the text rejects)")
        text = np.stack([emb[m] for m in ids]).astype(np.float32)
    y_tab = read_target(entries_path, target).set_index("material_id")["y"]
    y = np.asarray([y_tab.get(m, np.nan) for m in ids], dtype=np.float64)
    have = set(ids)
    splits = read_splits(splits_path)
    dropped = {s: [m for m in v if m not in have] for s, v in splits.items()}
    splits = {s: [m for m in v if m in have] for s, v in splits.items() if s in ("train", "val", "test")}
    data = EcdData(ids=ids, images=images, y=y, text=text)
    if tcfg.kfold:
        # CV predictions (out-of-fold val + every fold's test) go beside the metrics; the
        # predictions file holds the final model's, comparable with runs without k-fold.
        cv_pred, metrics = train_ecd_kfold(data, splits, model_name, mcfg, tcfg, target)
        write_parquet(cv_pred, Path(metrics_path).with_name("cv_predictions.parquet"))
        pred, final = train_ecd(data, splits, model_name, mcfg, tcfg, checkpoint_path, target)
        metrics["final"] = {k: final[k] for k in final if k != "history"}
        metrics["pretrained"] = final["pretrained"]
    else:
        pred, metrics = train_ecd(data, splits, model_name, mcfg, tcfg, checkpoint_path, target)
    metrics["n_without_image"] = {s: len(v) for s, v in dropped.items()}
    metrics["n_without_text"] = len(without_text)
    metrics["without_text"] = without_text
    kind = str(meta["kind"].iloc[0])
    metrics["density_kind"] = kind
    pred = pred.assign(density_kind=kind, pretrained=bool(metrics["pretrained"]))
    write_parquet(pred, predictions_path)
    write_json(metrics, metrics_path)
    return metrics
