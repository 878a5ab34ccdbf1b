"""MatMMFuse-style fusion of a crystal graph and a cached text embedding.

The graph side (a CGCNN backbone, trained end to end) and the frozen text embedding are each
projected to ``fusion_dim`` (512); an ``nn.MultiheadAttention`` (8 heads) combines them with
the *text* as query and the *graph* as key/value, followed by a residual connection and
LayerNorm; a linear layer maps the fused vector to the target.

Modes:

``published`` (model name ``matmmfuse``)
    One token per modality, as in the MatMMFuse paper: the key/value sequence is the single
    pooled graph vector.  A softmax over one key is identically 1, so every attention weight
    is exactly 1 and the "attention" reduces to ``out_proj(V(graph))`` added to the text
    query (residual) — i.e. a learned *sum* of the two projections, no input-dependent
    weighting.  Kept for reproducing the paper.
``tokens`` (model name ``matmmfuse_tokens``)
    Key/value are the graph's atom-level features (one token per atom, projected to
    ``fusion_dim``) with a per-graph key padding mask, so the text query really attends over
    atoms.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch_geometric.utils import to_dense_batch

from matfuse.models.backbones import build_backbone
from matfuse.models.cgcnn import CGCNNConfig


class MatMMFuseConfig(BaseModel):
    """Constructor settings of :class:`MatMMFuse`."""

    model_config = ConfigDict(extra="forbid")

    text_dim: int = Field(ge=1)
    mode: Literal["published", "tokens"] = "published"
    backbone: Literal["cgcnn"] = "cgcnn"
    graph: CGCNNConfig = Field(default_factory=CGCNNConfig)
    fusion_dim: int = Field(512, ge=1)
    heads: int = Field(8, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)


class MatMMFuse(nn.Module):
    """Graph + text regressor with an attention combiner (see the module docstring)."""


    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = MatMMFuseConfig(**kwargs)
        c = self.cfg
        if c.fusion_dim % c.heads:
            raise ValueError(f"fusion_dim {c.fusion_dim} is not divisible by heads {c.heads}")
        self.name = "matmmfuse" if c.mode == "published" else "matmmfuse_tokens"
        self.graph = build_backbone(c.backbone, c.graph.model_dump())
        in_graph = self.graph.embed_dim if c.mode == "published" else self.graph.atom_dim
        self.graph_proj = nn.Linear(in_graph, c.fusion_dim)
        self.text_proj = nn.Linear(c.text_dim, c.fusion_dim)
        self.attn = nn.MultiheadAttention(c.fusion_dim, c.heads, dropout=c.dropout, batch_first=True)
        self.norm = nn.LayerNorm(c.fusion_dim)
        self.head = nn.Linear(c.fusion_dim, 1)

    def fuse(self, batch: Any, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fused vectors ``(B, fusion_dim)`` and, if asked, attention weights ``(B, heads, 1, n_keys)``."""
        atoms, crys = self.graph.encode(batch)
        query = self.text_proj(batch.text.float()).unsqueeze(1)  # (B, 1, F)
        if self.cfg.mode == "published":
            kv = self.graph_proj(crys).unsqueeze(1)  # (B, 1, F): one key per crystal
            pad = None
        else:
            tokens, mask = to_dense_batch(
                self.graph_proj(atoms), batch.batch, batch_size=batch.num_graphs
            )  # (B, n_max, F)
            kv, pad = tokens, ~mask  # True = padding, ignored by attention
        out, weights = self.attn(
            query, kv, kv, key_padding_mask=pad, need_weights=need_weights, average_attn_weights=False
        )
        fused = self.norm(query + out).squeeze(1)
        return fused, weights

    def attention_weights(self, batch: Any) -> torch.Tensor:
        """Per-head attention weights ``(B, heads, 1, n_keys)`` (padding keys get 0)."""
        return self.fuse(batch, need_weights=True)[1]

    def forward(self, batch: Any) -> torch.Tensor:
        """Predictions, shape ``(B,)``."""
        return self.head(self.fuse(batch)[0]).squeeze(-1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.model_dump()}


def matmmfuse_tokens(**kwargs: Any) -> MatMMFuse:
    """Constructor for the registry name ``matmmfuse_tokens`` (``mode="tokens"``)."""
    kwargs.setdefault("mode", "tokens")
    if kwargs["mode"] != "tokens":
        raise ValueError("matmmfuse_tokens needs mode='tokens'")
    return MatMMFuse(**kwargs)


def matmmfuse_published(**kwargs: Any) -> MatMMFuse:
    """Constructor for the registry name ``matmmfuse`` (``mode="published"``)."""
    kwargs.setdefault("mode", "published")
    if kwargs["mode"] != "published":
        raise ValueError("matmmfuse needs mode='published' (use matmmfuse_tokens for tokens)")
    return MatMMFuse(**kwargs)
