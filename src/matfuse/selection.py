"""Model selection on validation numbers only, shared by every training loop."""

from __future__ import annotations

import math
from typing import Any


def _snapshot(model: Any) -> dict[str, Any]:
    """A CPU copy of ``model``'s weights (safe to keep while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class EarlyStopping:
    """Model selection on validation MAE: remembers the best epoch (and its weights) and says when to stop.

    ``update(epoch, val_mae, model)`` returns True when the epoch is a new best (strictly lower
    MAE; ties keep the earlier epoch) and then keeps a copy of ``model``'s weights; ``stop``
    becomes True once ``patience`` epochs have passed without improvement; ``restore(model)``
    loads the kept weights.  Given ``model`` at construction, its initial weights are kept until
    an epoch improves on them.  Only validation numbers ever reach it.
    """

    def __init__(self, patience: int, model: Any = None) -> None:
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.patience = patience
        self.best_mae = math.inf
        self.best_epoch = 0
        self.last_epoch = 0
        self.best_state: dict[str, Any] | None = _snapshot(model) if model is not None else None

    def update(self, epoch: int, val_mae: float, model: Any = None) -> bool:
        self.last_epoch = epoch
        if not math.isfinite(val_mae):
            return False
        if val_mae < self.best_mae:
            self.best_mae, self.best_epoch = float(val_mae), int(epoch)
            if model is not None:
                self.best_state = _snapshot(model)
            return True
        return False

    def restore(self, model: Any) -> bool:
        """Load the kept weights into ``model``; False when none were kept."""
        if self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True

    @property
    def stop(self) -> bool:
        return self.last_epoch - self.best_epoch >= self.patience
