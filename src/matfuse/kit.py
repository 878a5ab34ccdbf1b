"""The one training kit every model family uses.

Crystal-graph/text/fusion models (:mod:`matfuse.train`), the charge-density image models
(:mod:`matfuse.density.train`) and CroMEL (:mod:`matfuse.cromel`) all take from here:

* :func:`resolve_device` and :func:`seed_everything`;
* :func:`fit`: the supervised epoch loop (train step, validation MAE, model selection and early
  stopping with :class:`~matfuse.selection.EarlyStopping`, history);
* :func:`predict_in_batches`: the eval-mode, no-grad prediction loop;
* :func:`save_checkpoint` / :func:`load_checkpoint`: one checkpoint format for every model of the
  registry (:mod:`matfuse.models`): ``{"format", "model" (constructor config incl. its
  ``name``), "state_dict", "normalizer", "metadata"}`` with tensors and primitives only, so it
  loads with ``torch.load(weights_only=True)``;
* metrics come from :func:`matfuse.evaluate.regression_metrics` (one definition everywhere).

A model family brings its data pipeline (how a batch is made and what the loss of a batch is);
the loop, the selection rule and the files are the same for all.
"""

from __future__ import annotations

import io
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from matfuse.io import atomic_path
from matfuse.selection import EarlyStopping

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "matfuse-model-1"
B = TypeVar("B")


# --------------------------------------------------------------------------- device, seeds
def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device is {device!r} but no CUDA device is available (use 'auto' or 'cpu')")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy's global RNG and torch (CPU and CUDA); cuDNN in deterministic mode."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CUDA when ``enabled`` (no loss scaling needed); no-op otherwise."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


# --------------------------------------------------------------------------- the loop
@dataclass
class FitResult:
    """What :func:`fit` did: the selected epoch (1-based) and its validation MAE, the history."""

    best_epoch: int
    best_val_mae: float
    epochs_run: int
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def make_optimizer(
    params: Any, kind: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The training kit's optimiser: AdamW, or SGD with momentum (CGCNN's recipe)."""
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r} (adamw, sgd)")


def lr_schedule(
    optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup: float = 0.1,
    milestones: Sequence[float] = (0.8,), gamma: float = 0.1,
) -> Callable[[], None] | None:
    """A per-batch learning-rate schedule over ``total_steps`` (``fit(scheduler_step=...)``).

    ``constant``: none. ``onecycle``: :class:`torch.optim.lr_scheduler.OneCycleLR` with the
    optimiser's lr as peak and ``warmup`` as ``pct_start``. ``cosine``: linear warm-up over
    ``warmup`` of the steps, then cosine decay to 0 (the Hugging Face "cosine with warm-up").
    ``multistep``: lr × ``gamma`` at each milestone (shares of ``total_steps``), as CGCNN's
    MultiStepLR at epoch 800 of 1,000 (milestone 0.8).
    """
    if kind == "constant" or total_steps <= 0:
        return None
    if kind == "onecycle":
        peak = [g["lr"] for g in optimizer.param_groups]
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peak, total_steps=total_steps, pct_start=max(warmup, 1e-3),
            anneal_strategy="cos", cycle_momentum=False,
        )
    elif kind == "cosine":
        import math

        n_warm = int(round(warmup * total_steps))

        def factor(step: int) -> float:
            if step < n_warm:
                return (step + 1) / max(1, n_warm)
            progress = (step - n_warm) / max(1, total_steps - n_warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    elif kind == "multistep":
        steps = sorted(int(round(m * total_steps)) for m in milestones)
        sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=steps, gamma=gamma)
    else:
        raise ValueError(f"unknown learning-rate schedule {kind!r} (constant, onecycle, cosine, multistep)")
    state = {"steps": 0}

    def step() -> None:
        if state["steps"] < total_steps - 1:  # OneCycleLR refuses steps beyond total_steps
            sched.step()
        state["steps"] += 1

    return step


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    patience: int,
    batches: Callable[[], Iterable[B]],
    loss_of: Callable[[B], tuple[torch.Tensor, int] | None],
    validate: Callable[[], float],
    desc: str = "train",
    n_train: int | None = None,
    keep_initial: bool = False,
    scheduler_step: Callable[[], None] | None = None,
) -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs; keep the weights of the best validation epoch.

    Each epoch: ``model.train()``, then for every batch of ``batches()`` (called once per epoch,
    so a shuffle happens there) ``loss_of(batch)`` gives ``(loss, n)`` (or ``None`` to skip the
    batch) and the optimiser takes one step (``scheduler_step`` after each step, if given);
    then ``validate()`` returns the validation MAE in target units (it sets eval mode itself).
    Selection and early stopping (``patience`` epochs without a strictly lower MAE) look at
    that number only; at the end the best weights are loaded back into ``model``. With
    ``keep_initial`` the initial weights count as epoch 0 (kept if no epoch is finite).
    Raises ``RuntimeError`` when no validation MAE was finite and nothing was kept.
    """
    stopper = EarlyStopping(patience, model if keep_initial else None)
    history: list[dict[str, Any]] = []
    train_seconds = 0.0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    bar = tqdm(range(1, epochs + 1), desc=desc, mininterval=10)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        total, count = torch.zeros((), device=device), 0
        for batch in batches():
            step = loss_of(batch)
            if step is None:
                continue
            loss, n = step
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler_step is not None:
                scheduler_step()
            total += loss.detach() * n  # summed on the device: no sync per step
            count += n
        train_loss = float(total) / max(count, 1)
        train_time = time.perf_counter() - t0
        train_seconds += train_time
        val_mae = float(validate())
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": train_loss, "val_mae": val_mae, "seconds": seconds})
        improved = stopper.update(epoch, val_mae, model)
        rate = f", {n_train / train_time:.0f} structures/s" if n_train else ""
        log.info(
            "%s epoch %d: train_loss %.4f val_mae %.4f (%s) %.1fs%s", desc, epoch, train_loss, val_mae,
            "best" if improved else f"best {stopper.best_mae:.4f}@{stopper.best_epoch}", seconds, rate,
        )
        bar.set_postfix(val_mae=f"{val_mae:.4f}", best=f"{stopper.best_mae:.4f}")
        if stopper.stop:
            log.info("%s: early stopping, no validation improvement for %d epochs", desc, patience)
            break
    if not stopper.restore(model):
        raise RuntimeError(f"{desc}: validation MAE was never finite (diverged?)")
    return FitResult(
        best_epoch=int(stopper.best_epoch),
        best_val_mae=float(stopper.best_mae),
        epochs_run=len(history),
        train_seconds=train_seconds,
        history=history,
    )


def predict_in_batches(model: nn.Module, batches: Iterable[B], forward: Callable[[B], torch.Tensor]) -> np.ndarray:
    """``forward(batch)`` over ``batches`` in eval mode without gradients, as one float64 array."""
    model.eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for batch in batches:
            out.append(forward(batch).float().cpu().numpy().astype(np.float64))
    return np.concatenate(out) if out else np.zeros(0)


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    normalizer: dict[str, float] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Write ``path`` atomically: the model's constructor config (``model.to_config()``), CPU
    weights, the target/input normalisation and free-form metadata (primitives only)."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": model.to_config(),
        "state_dict": state,
        "normalizer": {k: float(v) for k, v in (normalizer or {}).items()},
        "metadata": metadata or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict (``weights_only=True``); ``ValueError`` for any other file."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a matfuse model checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on ``device``, checkpoint dict); the model is rebuilt from the registry."""
    from matfuse.models import model_from_config

    ckpt = read_checkpoint(path, device)
    model = model_from_config(ckpt["model"], for_loading=True)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device)
    model.eval()
    return model, ckpt


def finite_or(value: float, default: float = 1.0) -> float:
    """``value`` unless it is non-finite or ~0 (a standard deviation to divide by)."""
    return default if not math.isfinite(value) or abs(value) < 1e-12 else float(value)
