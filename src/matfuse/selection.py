"""Model selection on validation numbers only, shared by every training loop."""

from __future__ import annotations

import math


class EarlyStopping:
    """Model selection on validation MAE: remembers the best epoch and says when to stop.

    ``update(epoch, val_mae)`` returns True when the epoch is a new best (strictly lower MAE;
    ties keep the earlier epoch); ``stop`` becomes True once ``patience`` epochs have passed
    without improvement.  Only validation numbers ever reach it.
    """

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.patience = patience
        self.best_mae = math.inf
        self.best_epoch = 0
        self.last_epoch = 0

    def update(self, epoch: int, val_mae: float) -> bool:
        self.last_epoch = epoch
        if not math.isfinite(val_mae):
            return False
        if val_mae < self.best_mae:
            self.best_mae, self.best_epoch = float(val_mae), int(epoch)
            return True
        return False

    @property
    def stop(self) -> bool:
        return self.last_epoch - self.best_epoch >= self.patience
