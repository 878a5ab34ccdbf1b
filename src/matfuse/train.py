"""Training one model on one (dataset, target, seed).

Protocol: targets are standardised with the *training* split's mean/std; the loss is MSE on
standardised targets; AdamW; after every epoch the validation MAE (in target units) is
measured and the weights of the best validation epoch are kept; training stops after
``patience`` epochs without improvement.  The test split is never looked at here.

Outputs in ``out_dir`` (each written atomically):

* ``model.pt`` — ``{"format", "state_dict", "model" (constructor config), "normalizer"
  {"mean","std"}, "metadata"}``; tensors and primitive containers only, so it loads with
  ``torch.load(..., weights_only=True)`` (:func:`matfuse.kit.load_checkpoint`; the one
  format of every model family).
* ``config.json`` — every setting (paths, model config, training/graph config, counts).
* ``history.csv`` — ``epoch, train_loss, val_mae, seconds`` (one row per epoch).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from matfuse.config import GraphConfig, TrainingConfig
from matfuse.data import build_data, load_inputs, make_loader, read_splits, read_target, read_tokens, text_dim
from matfuse.io import write_json, write_text
from matfuse.kit import (
    autocast,
    finite_or,
    fit,
    lr_schedule,
    make_optimizer,
    predict_in_batches,
    resolve_device,
    save_checkpoint,
    seed_everything,
)
from matfuse.models import build_model, model_inputs, model_kwargs

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers
def loader_workers(threads: int, device: torch.device) -> int:
    """DataLoader worker processes for a job with ``threads`` cores.

    Collation is cheap next to the model on CPU, so CPU jobs use the cores for torch's
    intra-op threads and load in-process; GPU jobs use up to 4 workers to keep the GPU fed.
    """
    if device.type == "cuda":
        return max(0, min(4, threads - 1))
    return 0


def evaluate(
    model: nn.Module, loader: Any, device: torch.device, mean: float, std: float, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions in target units and the ``idx`` of each, in loader order (eval mode, no grad)."""
    idx: list[np.ndarray] = []

    def forward(batch: Any) -> torch.Tensor:
        batch = batch.to(device, non_blocking=True)
        idx.append(batch.idx.cpu().numpy())
        with autocast(device, amp):
            return model(batch)

    pred = predict_in_batches(model, loader, forward)
    if not idx:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return pred * std + mean, np.concatenate(idx)


# --------------------------------------------------------------------------- training
def training_subset(ids: list[str], n_train: int) -> list[str]:
    """The first ``n_train`` of one fixed permutation (seed 0) of the sorted ``ids``.

    Neither the model nor its seed changes it: seeds differ only in initialisation and batch
    order, every model of a size sees the same entries, and smaller subsets are nested in larger
    ones (a learning curve).
    """
    if n_train > len(ids):
        raise ValueError(f"train_sizes asks for {n_train} training entries; the training split has {len(ids)} with a target")
    order = sorted(ids)
    perm = np.random.default_rng(0).permutation(len(order))
    return [order[k] for k in perm[:n_train]]


def split_data(
    entries_path: str | Path, splits_path: str | Path, target: str, inputs: frozenset[str],
    graphs: dict[str, Any] | None, embeddings: dict[str, np.ndarray] | None, n_train: int | None = None,
    fold: int | None = None, tokens: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, list], dict[str, Any]]:
    """PyG data per split and the counts of what was left out (null target, missing input).

    ``n_train``: train on the first ``n_train`` usable entries of one fixed permutation of the
    training split (:func:`training_subset`; val and test stay whole). Raises ``ValueError`` when a
    split names unknown ids, train/val end up empty, or fewer than ``n_train`` are usable.
    ``fold``: the fold of a k-fold split file (see :func:`matfuse.data.read_splits`).
    """
    targets = read_target(entries_path, target)
    splits = read_splits(splits_path, fold=fold, target=target)
    for name in ("train", "val"):
        if not splits.get(name):
            raise ValueError(f"{splits_path}: split {name!r} is missing or empty (needed for training)")
    y_by_id = dict(zip(targets["material_id"], targets["y"]))
    counts: dict[str, Any] = {}
    data: dict[str, list] = {}
    for split in ("train", "val", "test"):
        ids = splits.get(split, [])
        unknown = [i for i in ids if i not in y_by_id]
        if unknown:
            raise ValueError(f"split {split!r} names {len(unknown)} ids not in the entries table, e.g. {unknown[0]!r}")
        known = [i for i in ids if not math.isnan(y_by_id[i])]
        n_null = len(ids) - len(known)
        if split == "train" and n_train is not None:
            known = training_subset(known, n_train)
        data_list, missing = build_data(known, [y_by_id[i] for i in known], inputs, graphs, embeddings, tokens)
        counts[split] = {"ids": len(ids), "null_target": n_null, "missing_input": len(missing), "used": len(data_list)}
        if n_null or missing:
            log.info(
                "%s: %d ids, %d excluded for null %s, %d for missing inputs (%s)",
                split, len(ids), n_null, target, len(missing),
                "; ".join(f"{m['material_id']}: {m['reason']}" for m in missing[:5]),
            )
        data[split] = data_list
    if not data["train"] or not data["val"]:
        raise ValueError(f"no usable training/validation entries for target {target!r}: {counts}")
    return data, counts


def train_model(
    entries_path: str | Path,
    splits_path: str | Path,
    graphs_path: str | Path | None,
    embeddings_path: str | Path | None,
    out_dir: str | Path,
    model_name: str,
    target: str,
    seed: int,
    training: TrainingConfig,
    graph: GraphConfig,
    threads: int = 1,
    n_train: int | None = None,
    fold: int | None = None,
    texts_path: str | Path | None = None,
    variant: str | None = None,
) -> dict[str, Any]:
    """Train ``model_name`` on ``target``; write model.pt, config.json, history.csv to ``out_dir``.

    ``fold``: train on that fold of a k-fold split file (its test fold is never looked at).
    ``texts_path`` / ``variant``: the texts table and its variant column, for models that fine-tune
    a text encoder (``training.text_encoder`` names the encoder).

    Entries whose target is null are excluded (counted and logged), as are entries without a
    graph / text embedding when the model needs one.  Model selection and early stopping use
    the validation MAE only.  Returns the run summary (also stored in the checkpoint metadata
    and config.json).
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    seed_everything(seed)
    torch.set_num_threads(max(1, int(threads)))
    device = resolve_device(training.device)
    inputs = model_inputs(model_name)

    graphs, embeddings = load_inputs(inputs, graphs_path, embeddings_path)
    tokens = None
    if "tokens" in inputs:
        enc = training.text_encoder
        if enc is None or texts_path is None or variant is None:
            raise ValueError(f"model {model_name!r} fine-tunes a text encoder: it needs training.text_encoder, "
                             "a texts table and a text variant")
        tokens = read_tokens(texts_path, variant, enc.model, enc.max_length)
    data, counts = split_data(entries_path, splits_path, target, inputs, graphs, embeddings, n_train, fold, tokens)

    y_train = np.array([d.y.item() for d in data["train"]], dtype=np.float64)
    mean = float(y_train.mean())
    std = finite_or(float(y_train.std()))
    normalizer = {"mean": mean, "std": std}

    tdim = text_dim(embeddings)
    kwargs = model_kwargs(model_name, training.hyper, graph, tdim, training.text_encoder)
    model = build_model(model_name, **kwargs).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = make_optimizer(model.parameters(), training.optimizer, training.lr, training.weight_decay, training.momentum)
    loss_fn = nn.MSELoss()

    pin = device.type == "cuda"
    workers = loader_workers(threads, device)
    train_loader = make_loader(data["train"], training.batch_size, True, seed, workers, pin)
    val_loader = make_loader(data["val"], max(training.batch_size, 256), False, seed, workers, pin)
    y_val = np.array([d.y.item() for d in data["val"]], dtype=np.float64)
    amp = bool(training.amp and device.type == "cuda")
    log.info(
        "training %s on %s (seed %d, %s, amp=%s): %d train / %d val, %d parameters, target mean %.4g std %.4g",
        model_name, target, seed, device, amp, len(data["train"]), len(data["val"]), n_params, mean, std,
    )

    mean_t = torch.tensor(mean, device=device)
    std_t = torch.tensor(std, device=device)

    def loss_of(batch: Any) -> tuple[torch.Tensor, int]:
        batch = batch.to(device, non_blocking=True)
        y = (batch.y - mean_t) / std_t
        with autocast(device, amp):
            out = model(batch)
        return loss_fn(out.float(), y), int(y.shape[0])

    def validate() -> float:
        pred, idx = evaluate(model, val_loader, device, mean, std, amp)
        return float(np.mean(np.abs(pred - y_val[idx])))

    result = fit(
        model, optimizer, epochs=training.epochs, patience=training.patience,
        batches=lambda: train_loader, loss_of=loss_of, validate=validate,
        desc=f"{model_name}/{target}", n_train=len(data["train"]),
        scheduler_step=lr_schedule(optimizer, training.schedule, training.epochs * len(train_loader), training.warmup,
                                   training.milestones, training.gamma),
    )
    history, best_epoch, best_mae = result.history, result.best_epoch, result.best_val_mae
    train_seconds = result.train_seconds

    summary: dict[str, Any] = {
        "model": model_name,
        "target": target,
        "seed": int(seed),
        "fold": fold,
        "n_train": len(data["train"]),
        "best_epoch": int(best_epoch),
        "best_val_mae": float(best_mae),
        "epochs_run": len(history),
        "counts": counts,
        "n_parameters": int(n_params),
        "device": str(device),
        "amp": amp,
        "text_dim": tdim,
        "train_structures_per_s": float(len(data["train"]) * len(history) / max(train_seconds, 1e-9)),
        "seconds": float(time.perf_counter() - t_start),
        "torch_version": str(torch.__version__),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "model.pt", model, normalizer, summary)
    write_text(pd.DataFrame(history).to_csv(index=False), out_dir / "history.csv")
    write_json(
        {
            "inputs": {
                "entries": str(entries_path),
                "splits": str(splits_path),
                "graphs": None if graphs_path is None else str(graphs_path),
                "embeddings": None if embeddings_path is None else str(embeddings_path),
                "texts": None if texts_path is None else str(texts_path),
                "variant": variant,
            },
            "model": model.to_config(),
            "normalizer": normalizer,
            "training": training.model_dump(),
            "graph": graph.model_dump(),
            "threads": int(threads),
            "summary": summary,
        },
        out_dir / "config.json",
    )
    log.info(
        "selected epoch %d (val MAE %.4f) of %d; %.0f train structures/s; wrote %s",
        best_epoch, best_mae, len(history), summary["train_structures_per_s"], out_dir,
    )
    return summary
