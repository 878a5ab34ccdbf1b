"""MatDeepLearn's CGCNN, the graph encoder of the MatMMFuse authors' code.

Architecture as in MatDeepLearn (Fung et al., npj Comput Mater 2021) with the MatMMFuse repo's
``CGCNN_demo`` settings (github Jonathanlyj/MatMMFuse, ``config.yml``): one-hot element input ->
``Linear(·, 100)`` + ReLU (pre-FC) -> 4 × PyG ``CGConv(100, 50, aggr="mean", batch_norm=False)``
each followed by ``BatchNorm1d`` and *no* activation -> global mean pool -> 3 × ``Linear(·, 150)``
+ ReLU (post-FC; the crystal vector) -> ``Linear(150, 1)``.

Edge features: MatDeepLearn scales distances to [0, 1] by the data set's min/max and expands
them in 50 Gaussians on [0, 1] of width 0.2 (``exp(-(d - mu)^2 / (2 * 0.2^2))``). Here the
distance is divided by the graph radius (8 Å) instead of the data set's maximum (nearly the same
for 12-neighbour graphs within 8 Å, and it does not change with the data set). Element input:
MatDeepLearn's ``dictionary_source: generated`` one-hot over the elements of the data set; here a
fixed one-hot over Z = 1..100 (the extra all-zero columns change nothing but the width).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch_geometric.nn import CGConv, global_mean_pool

N_ELEMENTS = 100


class MDLCGCNNConfig(BaseModel):
    """Constructor settings of :class:`MDLCGCNN` (MatMMFuse's ``CGCNN_demo`` by default)."""

    model_config = ConfigDict(extra="forbid")

    dim1: int = Field(100, ge=1, description="Width of the pre-FC layer and the convolutions.")
    dim2: int = Field(150, ge=1, description="Width of the post-FC layers (the crystal vector).")
    pre_fc_count: int = Field(1, ge=1)
    gc_count: int = Field(4, ge=1)
    post_fc_count: int = Field(3, ge=1)
    edge_features: int = Field(50, ge=2, description="Gaussians on the scaled distance.")
    gaussian_width: float = Field(0.2, gt=0)
    radius: float = Field(8.0, gt=0, description="Distances are divided by this (MatDeepLearn: the data set max).")
    dropout: float = Field(0.0, ge=0, lt=1)


class MDLCGCNN(nn.Module):
    """MatDeepLearn CGCNN regressor and graph backbone (``encode`` / ``atom_dim`` / ``embed_dim``)."""

    name = "mdl_cgcnn"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = MDLCGCNNConfig(**kwargs)
        c = self.cfg
        self.register_buffer("offsets", torch.linspace(0.0, 1.0, c.edge_features), persistent=False)
        self.pre = nn.ModuleList(
            nn.Linear(N_ELEMENTS if i == 0 else c.dim1, c.dim1) for i in range(c.pre_fc_count)
        )
        self.convs = nn.ModuleList(
            CGConv(c.dim1, c.edge_features, aggr="mean", batch_norm=False) for _ in range(c.gc_count)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(c.dim1) for _ in range(c.gc_count))
        self.post = nn.ModuleList(nn.Linear(c.dim1 if i == 0 else c.dim2, c.dim2) for i in range(c.post_fc_count))
        self.lin_out = nn.Linear(c.dim2, 1)

    @property
    def atom_dim(self) -> int:
        return self.cfg.dim1

    @property
    def embed_dim(self) -> int:
        return self.cfg.dim2

    def edge_attr(self, dist: torch.Tensor) -> torch.Tensor:
        d = (dist.float() / self.cfg.radius).unsqueeze(-1) - self.offsets
        return torch.exp(-0.5 / self.cfg.gaussian_width**2 * d * d)

    def encode(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        z = batch.z.clamp(1, N_ELEMENTS) - 1
        if bool((batch.z > N_ELEMENTS).any()):
            raise ValueError(f"mdl_cgcnn's one-hot covers Z = 1..{N_ELEMENTS}; the batch has Z = {int(batch.z.max())}")
        x = F.one_hot(z, N_ELEMENTS).float()
        for lin in self.pre:
            x = F.relu(lin(x))
        e = self.edge_attr(batch.edge_dist)
        for conv, bn in zip(self.convs, self.bns):
            x = bn(conv(x, batch.edge_index, e))
            x = F.dropout(x, p=self.cfg.dropout, training=self.training)
        crys = global_mean_pool(x, batch.batch, size=batch.num_graphs)
        for lin in self.post:
            crys = F.relu(lin(crys))
        return x, crys

    def forward(self, batch: Any) -> torch.Tensor:
        return self.lin_out(self.encode(batch)[1]).squeeze(-1)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.model_dump()}
