"""Text-only baseline: a frozen, cached sentence embedding -> MLP regressor."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class TextMLPConfig(BaseModel):
    """Constructor settings of :class:`TextMLP`."""

    model_config = ConfigDict(extra="forbid")

    text_dim: int = Field(ge=1, description="Width of the cached text embedding.")
    hidden: int = Field(128, ge=1)
    n_layers: int = Field(2, ge=1, description="Hidden layers.")
    dropout: float = Field(0.1, ge=0, lt=1)


class TextMLP(nn.Module):
    """MLP on ``batch.text`` ``(B, text_dim)``; the text encoder itself is not trained."""

    name = "text"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = TextMLPConfig(**kwargs)
        c = self.cfg
        layers: list[nn.Module] = [nn.LayerNorm(c.text_dim)]
        width = c.text_dim
        for _ in range(c.n_layers):
            layers += [nn.Linear(width, c.hidden), nn.SiLU(), nn.Dropout(c.dropout)]
            width = c.hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, batch: Any) -> torch.Tensor:
        """Predictions, shape ``(B,)``."""
        return self.net(batch.text.float()).squeeze(-1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.model_dump()}
