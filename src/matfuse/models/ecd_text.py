"""Charge-density image features fused with a text embedding (Robocrystallographer description).

Following Massa et al. (arXiv 2401.09301): image features (CNN or InceptionV3, without their
output layer) are concatenated with the text embedding (Single / Key / All description variants)
-> Dense(32) -> ReLU -> Dropout -> Dense(1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from matfuse.models.ecd_cnn import EcdCNN, EcdCNNConfig
from matfuse.models.ecd_inception import EcdInception, EcdInceptionConfig


@dataclass
class EcdTextConfig:
    """Constructor arguments (stored in checkpoints)."""

    text_dim: int = 384
    image_model: str = "ecd_cnn"  # or "ecd_inception"
    image_cfg: dict = field(default_factory=dict)  # kwargs of the image model's config
    hidden: int = 32
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class EcdText(nn.Module):
    name = "ecd_text"

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "EcdText":
        """Build from :meth:`to_config`'s kwargs (the registry's factory)."""
        return cls(EcdTextConfig(**kwargs))

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.to_dict()}

    def __init__(self, cfg: EcdTextConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or EcdTextConfig()
        self.cfg = cfg
        if cfg.image_model == "ecd_cnn":
            icfg = dict(cfg.image_cfg)
            if "image_size" in icfg:
                icfg["image_size"] = tuple(icfg["image_size"])
            self.image: nn.Module = EcdCNN(EcdCNNConfig(**icfg))
        elif cfg.image_model == "ecd_inception":
            self.image = EcdInception(EcdInceptionConfig(**cfg.image_cfg))
        else:
            raise ValueError(f"unknown image model {cfg.image_model!r}")
        self.pretrained = bool(getattr(self.image, "pretrained", False))
        d = int(self.image.feature_dim) + cfg.text_dim
        self.head = nn.Sequential(nn.Linear(d, cfg.hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, 1))

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) and text embeddings (B, text_dim) -> (B,)."""
        if text.shape[-1] != self.cfg.text_dim:
            raise ValueError(f"text embedding width {text.shape[-1]} != configured {self.cfg.text_dim}")
        return self.head(torch.cat([self.image.features(x), text], dim=-1)).squeeze(-1)
