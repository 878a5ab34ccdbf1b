"""CrysMMNet (Das et al., UAI 2023): graph and text embeddings fused by concatenation.

Each modality goes through a CLIP-style projection head (``Linear -> GELU -> Linear ->
Dropout``, residual to the first projection, ``LayerNorm``) to ``proj_dim`` (64); the two
64-d vectors are concatenated and regressed by ``Linear(128, 64) -> act -> Linear(64, 1)``.
The paper uses ALIGNN as the graph backbone (kdmsit/crysmmnet ``src/models/alignn.py``: the
average-pooled 256-d ALIGNN vector into the graph head, frozen MatSciBERT [CLS] into the text
head, ``F.relu`` after ``fc1``); here the backbone is pluggable (:mod:`matfuse.models.backbones`:
``backbone: cgcnn`` (default, ``graph`` a :class:`CGCNNConfig`) or ``alignn`` (``graph`` an
:class:`ALIGNNConfig`), registry models ``crysmmnet`` / ``crysmmnet_alignn``) and trained end to
end, while the text side is a frozen cached embedding.  ``activation``: ``silu`` (our default,
kept so existing checkpoints rebuild unchanged) or ``relu`` (the published one, used by
``crysmmnet_alignn``).
"""

from __future__ import annotations

from typing import Any, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from matfuse.models.alignn import ALIGNNConfig
from matfuse.models.backbones import build_backbone
from matfuse.models.cgcnn import CGCNNConfig

#: The typed constructor config of each backbone ``CrysMMNetConfig.graph`` follows.
BACKBONE_CONFIGS: dict[str, type[BaseModel]] = {"cgcnn": CGCNNConfig, "alignn": ALIGNNConfig}


class CrysMMNetConfig(BaseModel):
    """Constructor settings of :class:`CrysMMNet`; ``graph`` is the config of ``backbone``."""

    model_config = ConfigDict(extra="forbid")

    text_dim: int = Field(ge=1)
    backbone: Literal["cgcnn", "alignn"] = "cgcnn"
    graph: Union[CGCNNConfig, ALIGNNConfig] = Field(default_factory=CGCNNConfig)
    proj_dim: int = Field(64, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    activation: Literal["silu", "relu"] = Field(
        "silu", description="After the fusion layer: silu (ours) or relu (CrysMMNet's published F.relu).")

    @model_validator(mode="before")
    @classmethod
    def _graph_follows_backbone(cls, data: Any) -> Any:
        """Parse ``graph`` with the config class of ``backbone`` (both accept ``{}``)."""
        if not isinstance(data, dict):
            return data
        klass = BACKBONE_CONFIGS.get(data.get("backbone", "cgcnn"))
        graph = data.get("graph")
        if klass is None or isinstance(graph, klass):
            return data
        if graph is None:
            return {**data, "graph": klass()}
        if isinstance(graph, dict):
            return {**data, "graph": klass.model_validate(graph)}
        return data

    @model_validator(mode="after")
    def _graph_matches_backbone(self) -> "CrysMMNetConfig":
        want = BACKBONE_CONFIGS[self.backbone]
        if type(self.graph) is not want:
            raise ValueError(f"backbone {self.backbone!r} needs graph settings of {want.__name__}, "
                             f"got {type(self.graph).__name__}")
        return self


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
        self.act = nn.SiLU() if c.activation == "silu" else nn.ReLU()
        self.fc_out = nn.Linear(c.proj_dim, 1)

    def forward(self, batch: Any) -> torch.Tensor:
        """Predictions, shape ``(B,)``."""
        g = self.graph_head(self.graph.encode(batch)[1])
        t = self.text_head(batch.text.float())
        return self.fc_out(self.act(self.fc(torch.cat([g, t], dim=-1)))).squeeze(-1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.model_dump()}


def crysmmnet_alignn(**kwargs: Any) -> CrysMMNet:
    """CrysMMNet as published: the ALIGNN backbone and ReLU after the fusion layer (kwargs win)."""
    return CrysMMNet(**{"backbone": "alignn", "activation": "relu", **kwargs})
