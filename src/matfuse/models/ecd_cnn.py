"""From-scratch CNN on 2-D electron-charge-density images (regression).

Massa, Papanikolaou & Sankowski (arXiv 2401.09301) train a CNN "from scratch" following
Arora et al.; their Table 1 could not be retrieved offline, so the layout here is our reading of
such a network, kept configurable: blocks of Conv3x3 -> BatchNorm -> ReLU -> MaxPool(2), then
Flatten -> Dense(``dense``) -> ReLU -> Dropout -> Dense(1). The spatial map is flattened (not
averaged) because position in a density slice is meaningful.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class EcdCNNConfig:
    """Constructor arguments (stored in checkpoints)."""

    in_channels: int = 1
    image_size: tuple[int, int] = (75, 75)
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    kernel_size: int = 3
    dense: int = 128
    dropout: float = 0.2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d


class EcdCNN(nn.Module):
    """Image -> scalar. ``features(x)`` gives the ``dense``-wide vector before the output layer."""

    name = "ecd_cnn"

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "EcdCNN":
        """Build from :meth:`to_config`'s kwargs (the registry's factory)."""
        if "image_size" in kwargs:
            kwargs["image_size"] = tuple(kwargs["image_size"])
        return cls(EcdCNNConfig(**kwargs))

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.to_dict()}

    def __init__(self, cfg: EcdCNNConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or EcdCNNConfig()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = cfg.in_channels
        h, w = cfg.image_size
        for c_out in cfg.channels:
            layers += [
                nn.Conv2d(c_in, c_out, cfg.kernel_size, padding=cfg.kernel_size // 2),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c_out
            h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"image {cfg.image_size} too small for {len(cfg.channels)} pooling blocks")
        self.conv = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c_in * h * w, cfg.dense), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.dense, 1)
        self.feature_dim = cfg.dense

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, dense)."""
        return self.embed(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B,)."""
        return self.out(self.dropout(self.features(x))).squeeze(-1)
