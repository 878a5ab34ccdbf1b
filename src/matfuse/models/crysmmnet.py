"""CrysMMNet (Das et al., UAI 2023): graph and text embeddings fused by concatenation.

Each modality goes through a CLIP-style projection head (``Linear -> GELU -> Linear ->
Dropout``, residual to the first projection, ``LayerNorm``) to ``proj_dim`` (64); the two
64-d vectors are concatenated and regressed by ``Linear(128, 64) -> SiLU -> Linear(64, 1)``.
The paper uses ALIGNN as the graph backbone; here the backbone is pluggable
(:mod:`matfuse.models.backbones`, CGCNN by default) and trained end to end, while the text
side is a frozen cached embedding.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from matfuse.models.backbones import build_backbone
from matfuse.models.cgcnn import CGCNNConfig


class CrysMMNetConfig(BaseModel):
    """Constructor settings of :class:`CrysMMNet`."""

    model_config = ConfigDict(extra="forbid")

    text_dim: int = Field(ge=1)
    backbone: Literal["cgcnn"] = "cgcnn"
    graph: CGCNNConfig = Field(default_factory=CGCNNConfig)
    proj_dim: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class ProjectionHead(nn.Module):
    """``LayerNorm(p + Dropout(Linear(GELU(p))))`` with ``p = Linear(x)``."""

    def __init__(self, in_dim: int, proj_dim: int, dropout: float) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, proj_dim)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(proj_dim, proj_dim)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.projection(x)
        x = self.dropout(self.fc(self.gelu(projected)))
        return self.layer_norm(x + projected)


class CrysMMNet(nn.Module):
    """Graph + text regressor with projection heads and concatenation fusion."""

    name = "crysmmnet"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = CrysMMNetConfig(**kwargs)
        c = self.cfg
        self.graph = build_backbone(c.backbone, c.graph.model_dump())
        self.graph_head = ProjectionHead(self.graph.embed_dim, c.proj_dim, c.dropout)
        self.text_head = ProjectionHead(c.text_dim, c.proj_dim, c.dropout)
        self.fc = nn.Linear(2 * c.proj_dim, c.proj_dim)
        self.act = nn.SiLU()
        self.fc_out = nn.Linear(c.proj_dim, 1)

    def forward(self, batch: Any) -> torch.Tensor:
        """Predictions, shape ``(B,)``."""
        g = self.graph_head(self.graph.encode(batch)[1])
        t = self.text_head(batch.text.float())
        return self.fc_out(self.act(self.fc(torch.cat([g, t], dim=-1)))).squeeze(-1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.model_dump()}
