"""Training one model on one (dataset, target, seed).

Protocol: targets are standardised with the *training* split's mean/std; the loss is MSE on
standardised targets; AdamW; after every epoch the validation MAE (in target units) is
measured and the weights of the best validation epoch are kept; training stops after
``patience`` epochs without improvement.  The test split is never looked at here.

Outputs in ``out_dir`` (each written atomically):

* ``model.pt`` — ``{"format", "state_dict", "model" (constructor config), "normalizer"
  {"mean","std"}, "metadata"}``; tensors and primitive containers only, so it loads with
  ``torch.load(..., weights_only=True)`` (see :func:`load_checkpoint`).
* ``config.json`` — every setting (paths, model config, training/graph config, counts).
* ``history.csv`` — ``epoch, train_loss, val_mae, seconds`` (one row per epoch).
"""

from __future__ import annotations

import io
import logging
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from matfuse.config import GraphConfig, TrainingConfig
from matfuse.data import build_data, load_inputs, make_loader, read_splits, read_target, text_dim
from matfuse.selection import EarlyStopping  # noqa: F401  (re-exported)
from matfuse.io import atomic_path, write_json, write_text
from matfuse.models import model_from_config, model_inputs, model_kwargs, build_model

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "matfuse-model-1"


# --------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); cuDNN in deterministic mode."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available")
    return torch.device(device)


def loader_workers(threads: int, device: torch.device) -> int:
    """DataLoader worker processes for a job with ``threads`` cores.

    Collation is cheap next to the model on CPU, so CPU jobs use the cores for torch's
    intra-op threads and load in-process; GPU jobs use up to 4 workers to keep the GPU fed.
    """
    if device.type == "cuda":
        return max(0, min(4, threads - 1))
    return 0


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA when ``enabled`` (no loss scaling needed); no-op otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def evaluate(
    model: nn.Module, loader: Any, device: torch.device, mean: float, std: float, amp: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions in target units and the ``idx`` of each, in loader order (eval mode, no grad)."""
    model.eval()
    preds: list[np.ndarray] = []
    idx: list[np.ndarray] = []
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            with autocast(device, amp):
                out = model(batch)
            preds.append(out.float().cpu().numpy().astype(np.float64) * std + mean)
            idx.append(batch.idx.cpu().numpy())
    if not preds:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(preds), np.concatenate(idx)


def save_checkpoint(
    path: str | Path, model: nn.Module, normalizer: dict[str, float], metadata: dict[str, Any]
) -> None:
    """Write ``model.pt`` atomically (tensors + primitives only)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": state,
        "model": model.to_config(),
        "normalizer": {"mean": float(normalizer["mean"]), "std": float(normalizer["std"])},
        "metadata": metadata,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load ``model.pt`` with ``weights_only=True``; return (model in eval mode, checkpoint dict)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a matfuse model checkpoint (format {CHECKPOINT_FORMAT})")
    model = model_from_config(ckpt["model"])
    model.load_state_dict(ckpt["state_dict"])
    model.to(device)
    model.eval()
    return model, ckpt


# --------------------------------------------------------------------------- training
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
) -> dict[str, Any]:
    """Train ``model_name`` on ``target``; write model.pt, config.json, history.csv to ``out_dir``.

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

    targets = read_target(entries_path, target)
    splits = read_splits(splits_path)
    for name in ("train", "val"):
        if not splits.get(name):
            raise ValueError(f"{splits_path}: split {name!r} is missing or empty (needed for training)")
    graphs, embeddings = load_inputs(inputs, graphs_path, embeddings_path)

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
        data_list, missing = build_data(known, [y_by_id[i] for i in known], inputs, graphs, embeddings)
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

    y_train = np.array([d.y.item() for d in data["train"]], dtype=np.float64)
    mean = float(y_train.mean())
    std = float(y_train.std())
    if not math.isfinite(std) or std < 1e-12:
        std = 1.0
    normalizer = {"mean": mean, "std": std}

    tdim = text_dim(embeddings)
    kwargs = model_kwargs(model_name, training.hyper, graph, tdim)
    model = build_model(model_name, **kwargs).to(device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
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
    history: list[dict[str, Any]] = []
    stopper = EarlyStopping(training.patience)
    train_seconds = 0.0
    epochs = tqdm(range(1, training.epochs + 1), desc=f"{model_name}/{target}", mininterval=10)
    for epoch in epochs:
        t0 = time.perf_counter()
        model.train()
        total, count = torch.zeros((), device=device), 0
        for batch in train_loader:
            batch = batch.to(device, non_blocking=True)
            y = (batch.y - mean_t) / std_t
            with autocast(device, amp):
                out = model(batch)
            loss = loss_fn(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = int(y.shape[0])
            total += loss.detach() * n  # summed on the device: no sync per step
            count += n
        train_loss = float(total) / count
        train_time = time.perf_counter() - t0
        train_seconds += train_time
        pred, idx = evaluate(model, val_loader, device, mean, std, amp)
        val_mae = float(np.mean(np.abs(pred - y_val[idx])))
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": train_loss, "val_mae": val_mae, "seconds": seconds})
        improved = stopper.update(epoch, val_mae, model)
        best_mae, best_epoch = stopper.best_mae, stopper.best_epoch
        log.info(
            "epoch %d: train_loss %.4f val_mae %.4f (%s) %.1fs, %.0f structures/s",
            epoch, train_loss, val_mae, "best" if improved else f"best {best_mae:.4f}@{best_epoch}",
            seconds, len(data["train"]) / train_time,
        )
        epochs.set_postfix(val_mae=f"{val_mae:.4f}", best=f"{best_mae:.4f}")
        if stopper.stop:
            log.info("early stopping: no validation improvement for %d epochs", training.patience)
            break
    if not stopper.restore(model):
        raise RuntimeError(f"{model_name}/{target}: validation MAE was never finite (diverged?)")

    summary: dict[str, Any] = {
        "model": model_name,
        "target": target,
        "seed": int(seed),
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
