"""MatMMFuse (Bhattacharya & Cloutier, arXiv 2505.04634): a crystal graph and a text fused by attention.

Two model classes:

:class:`MatMMFuseE2E` — registry name ``matmmfuse``, the published model
    The text encoder runs in the training loop and is fine-tuned end to end with the graph
    encoder and the fusion block (:mod:`matfuse.models.text_encoder`; token ids from the robocrys
    texts, not the embedding cache). Fusion as in the authors' ``ImprovedAttentionCombiner``
    (github Jonathanlyj/MatMMFuse, ``cross_attn_fusion.py``): graph and text vectors projected to
    ``fusion_dim`` (512), *one* LayerNorm applied to both, 8-head attention with the text as query
    and the graph as key/value, dropout 0.2 on the attention weights, output projection,
    ``norm2(out + normed_text)``, linear head. Text pooling: the authors' unmasked mean
    (``mean_unmasked``), masked ``mean``, ``cls`` or ``pooler``. Graph encoder: our CGCNN or
    MatDeepLearn's (``backbone: mdl_cgcnn``, :mod:`matfuse.models.mdl_cgcnn`, the authors' choice).
    With one key per crystal the attention softmax is identically 1, so the dropout on it acts as
    dropout on the projected graph value.

:class:`MatMMFuse` — the same kind of fusion on *frozen cached* text embeddings (our fast CPU
variants):

``pooled`` (registry name ``matmmfuse_frozen``)
    One token per modality: the key/value sequence is the single pooled graph vector. A softmax
    over one key is identically 1, so the "attention" reduces to ``out_proj(V(graph))`` added to
    the text query (residual) — a learned *sum* of the two projections. Residual + LayerNorm
    after the attention only (not the published pre-norm). ``published`` is read as ``pooled``
    (the name of this mode before the end-to-end model existed).
``tokens`` (registry name ``matmmfuse_tokens``)
    Key/value are the graph's atom-level features (one token per atom, projected to
    ``fusion_dim``) with a per-graph key padding mask, so the text query really attends over
    atoms.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch_geometric.utils import to_dense_batch

from matfuse.models.backbones import build_backbone
from matfuse.models.text_encoder import HFTextEncoder


class MatMMFuseConfig(BaseModel):
    """Constructor settings of :class:`MatMMFuse`."""

    model_config = ConfigDict(extra="forbid")

    text_dim: int = Field(ge=1)
    mode: Literal["pooled", "tokens"] = "pooled"
    backbone: Literal["cgcnn", "mdl_cgcnn"] = "cgcnn"
    graph: dict[str, Any] = Field(default_factory=dict, description="Constructor settings of the backbone.")
    fusion_dim: int = Field(512, ge=1)
    heads: int = Field(8, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)

    @field_validator("mode", mode="before")
    @classmethod
    def _legacy_mode(cls, v: Any) -> Any:
        return "pooled" if v == "published" else v


class MatMMFuse(nn.Module):
    """Graph + text regressor with an attention combiner (see the module docstring)."""


    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = MatMMFuseConfig(**kwargs)
        c = self.cfg
        if c.fusion_dim % c.heads:
            raise ValueError(f"fusion_dim {c.fusion_dim} is not divisible by heads {c.heads}")
        self.name = "matmmfuse_frozen" if c.mode == "pooled" else "matmmfuse_tokens"
        self.graph = build_backbone(c.backbone, c.graph)
        in_graph = self.graph.embed_dim if c.mode == "pooled" else self.graph.atom_dim
        self.graph_proj = nn.Linear(in_graph, c.fusion_dim)
        self.text_proj = nn.Linear(c.text_dim, c.fusion_dim)
        self.attn = nn.MultiheadAttention(c.fusion_dim, c.heads, dropout=c.dropout, batch_first=True)
        self.norm = nn.LayerNorm(c.fusion_dim)
        self.head = nn.Linear(c.fusion_dim, 1)

    def fuse(self, batch: Any, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fused vectors ``(B, fusion_dim)`` and, if asked, attention weights ``(B, heads, 1, n_keys)``."""
        atoms, crys = self.graph.encode(batch)
        query = self.text_proj(batch.text.float()).unsqueeze(1)  # (B, 1, F)
        if self.cfg.mode == "pooled":
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


def matmmfuse_frozen(**kwargs: Any) -> MatMMFuse:
    """Constructor for the registry name ``matmmfuse_frozen`` (``mode="pooled"``)."""
    kwargs.setdefault("mode", "pooled")
    if kwargs["mode"] not in ("pooled", "published"):
        raise ValueError("matmmfuse_frozen needs mode='pooled' (use matmmfuse_tokens for tokens)")
    return MatMMFuse(**kwargs)


# --------------------------------------------------------------------------- end to end
class MatMMFuseE2EConfig(BaseModel):
    """Constructor settings of :class:`MatMMFuseE2E` (defaults: the authors' code)."""

    model_config = ConfigDict(extra="forbid")

    text: dict[str, Any] = Field(description="Constructor settings of the text encoder (TextEncoderConfig).")
    backbone: Literal["cgcnn", "mdl_cgcnn"] = "mdl_cgcnn"
    graph: dict[str, Any] = Field(default_factory=dict, description="Constructor settings of the backbone.")
    fusion_dim: int = Field(512, ge=1)
    heads: int = Field(8, ge=1)
    attn_dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on the attention weights (authors: 0.2).")


class MatMMFuseE2E(nn.Module):
    """MatMMFuse with the text encoder fine-tuned in the loop (see the module docstring)."""

    name = "matmmfuse"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        c = MatMMFuseE2EConfig(**kwargs)
        if c.fusion_dim % c.heads:
            raise ValueError(f"fusion_dim {c.fusion_dim} is not divisible by heads {c.heads}")
        self.text = HFTextEncoder(**c.text)
        self.cfg = c.model_copy(update={"text": self.text.to_config()})
        self.graph = build_backbone(c.backbone, c.graph)
        self.graph_proj = nn.Linear(self.graph.embed_dim, c.fusion_dim)
        self.text_proj = nn.Linear(self.text.hidden_size, c.fusion_dim)
        self.norm1 = nn.LayerNorm(c.fusion_dim)  # one LayerNorm for both inputs, as published
        self.attn = nn.MultiheadAttention(c.fusion_dim, c.heads, dropout=c.attn_dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(c.fusion_dim)
        self.head = nn.Linear(c.fusion_dim, 1)

    def forward(self, batch: Any) -> torch.Tensor:
        """Predictions, shape ``(B,)``."""
        crys = self.graph.encode(batch)[1]
        text = self.text(batch.input_ids, batch.attention_mask)
        t = self.norm1(self.text_proj(text)).unsqueeze(1)  # (B, 1, F), query
        g = self.norm1(self.graph_proj(crys)).unsqueeze(1)  # (B, 1, F), key = value
        out, _ = self.attn(t, g, g, need_weights=False)
        fused = self.norm2(out + t).squeeze(1)
        return self.head(fused).squeeze(-1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.model_dump()}
