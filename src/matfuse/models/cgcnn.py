"""CGCNN (Xie & Grossman, Phys. Rev. Lett. 120, 145301, 2018) on PyTorch Geometric batches.

A faithful re-implementation of the reference ``cgcnn`` convolution
(``fc_full`` -> BatchNorm over edges -> sigmoid(filter) * softplus(core) -> sum over
neighbours -> BatchNorm -> softplus(x + sum)), written on PyG edge lists instead of
CGCNN's dense ``(N, M)`` neighbour tensors, with mean pooling and the reference head
(softplus -> ``conv_to_fc`` -> softplus -> [hidden layers] -> ``fc_out``).

Speed: ``fc_full(cat[x_i, x_j, e_ij])`` is evaluated as ``W_i x_i + W_j x_j + W_e e_ij``
with the two atom terms computed once per *atom* (not per edge) and then gathered; the
result is identical, the weights keep the reference layout (``fc_full`` of shape
``2A x (2A + B)``).  The Gaussian distance expansion is computed on the batch on the fly.

``conv="pyg"`` swaps in ``torch_geometric.nn.CGConv(batch_norm=True)`` (a simplified
variant without the edge batch norm and the outer softplus) for comparison.

Inputs (a PyG ``Batch``): ``z`` (atomic numbers, long), ``edge_index`` ([neighbour, centre]),
``edge_dist`` (Å), ``batch``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch_geometric.nn import CGConv, global_mean_pool

from matfuse.graphs import atom_feature_table, cgcnn_atom_init_table


class CGCNNConfig(BaseModel):
    """Constructor settings of :class:`CGCNN` (stored in checkpoints)."""

    model_config = ConfigDict(extra="forbid")

    atom_fea_len: int = Field(64, ge=1)
    n_conv: int = Field(3, ge=1)
    h_fea_len: int = Field(128, ge=1)
    n_h: int = Field(1, ge=1, description="Fully connected layers after pooling (reference default 1).")
    radius: float = Field(8.0, gt=0)
    gaussian_step: float = Field(0.2, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    conv: Literal["cgcnn", "pyg"] = "cgcnn"
    atom_features: Literal["recomputed", "cgcnn"] = Field(
        "recomputed", description="Element input features: our 91-wide recomputation, or CGCNN's own 92-wide "
        "atom_init.json (matminer's copy).")


class CGCNNConv(nn.Module):
    """One reference CGCNN convolution on an edge list (messages flow neighbour -> centre)."""

    def __init__(self, atom_fea_len: int, nbr_fea_len: int) -> None:
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        a = self.atom_fea_len
        src, dst = edge_index[0], edge_index[1]
        w = self.fc_full.weight
        # Linear(cat[x_dst, x_src, e]) split into per-atom and per-edge parts (same result).
        h_self = F.linear(x, w[:, :a])
        h_nbr = F.linear(x, w[:, a : 2 * a])
        gated = h_self.index_select(0, dst) + h_nbr.index_select(0, src) + F.linear(
            edge_attr, w[:, 2 * a :], self.fc_full.bias
        )
        gated = self.bn1(gated)
        filt, core = gated.chunk(2, dim=1)
        msg = torch.sigmoid(filt) * F.softplus(core)
        summed = torch.zeros(x.shape[0], a, dtype=msg.dtype, device=msg.device).index_add_(0, dst, msg)
        summed = self.bn2(summed)
        return F.softplus(x + summed)


class _PyGConv(nn.Module):
    def __init__(self, atom_fea_len: int, nbr_fea_len: int) -> None:
        super().__init__()
        self.conv = CGConv(atom_fea_len, dim=nbr_fea_len, aggr="add", batch_norm=True)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
        return self.conv(x, edge_index, edge_attr)


class CGCNN(nn.Module):
    """Crystal graph convolutional network regressor (one scalar per crystal)."""

    name = "cgcnn"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = CGCNNConfig(**kwargs)
        c = self.cfg
        table = torch.from_numpy((atom_feature_table() if c.atom_features == "recomputed" else cgcnn_atom_init_table()).copy())
        # Persistent buffer: the checkpoint carries the exact features it was trained with.
        self.register_buffer("atom_table", table)
        n_centers = int(round(c.radius / c.gaussian_step)) + 1
        self.register_buffer("gauss_centers", torch.arange(n_centers, dtype=torch.float32) * c.gaussian_step)
        self.embedding = nn.Linear(table.shape[1], c.atom_fea_len)
        conv_cls = CGCNNConv if c.conv == "cgcnn" else _PyGConv
        self.convs = nn.ModuleList(conv_cls(c.atom_fea_len, n_centers) for _ in range(c.n_conv))
        self.conv_to_fc = nn.Linear(c.atom_fea_len, c.h_fea_len)
        self.fcs = nn.ModuleList(nn.Linear(c.h_fea_len, c.h_fea_len) for _ in range(c.n_h - 1))
        self.dropout = nn.Dropout(c.dropout)
        self.fc_out = nn.Linear(c.h_fea_len, 1)

    # ------------------------------------------------------------------ pieces
    @property
    def atom_dim(self) -> int:
        """Width of the atom-level features (:meth:`encode`'s first output)."""
        return self.cfg.atom_fea_len

    @property
    def embed_dim(self) -> int:
        """Width of the crystal vector (:meth:`embed`)."""
        return self.cfg.h_fea_len

    def expand_distances(self, dist: torch.Tensor) -> torch.Tensor:
        """CGCNN Gaussian filter: ``exp(-(d - mu_k)^2 / step^2)`` for centres ``0, step, ..., radius``."""
        diff = dist.unsqueeze(-1).float() - self.gauss_centers
        return torch.exp(-(diff * diff) / (self.cfg.gaussian_step**2))

    def encode(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Atom features after the convolutions ``(N, atom_fea_len)`` and crystal vectors ``(B, h_fea_len)``."""
        x = self.embedding(self.atom_table[batch.z])
        edge_attr = self.expand_distances(batch.edge_dist)
        for conv in self.convs:
            x = conv(x, batch.edge_index, edge_attr)
        crys = global_mean_pool(x, batch.batch, size=batch.num_graphs)
        crys = F.softplus(self.conv_to_fc(F.softplus(crys)))
        crys = self.dropout(crys)
        for fc in self.fcs:
            crys = F.softplus(fc(crys))
        return x, crys

    def embed(self, batch: Any) -> torch.Tensor:
        """Crystal vector before the output layer, ``(B, h_fea_len)``."""
        return self.encode(batch)[1]

    def forward(self, batch: Any) -> torch.Tensor:
        """Predictions, shape ``(B,)`` (in normalised target units)."""
        return self.fc_out(self.embed(batch)).squeeze(-1)

    def to_config(self) -> dict[str, Any]:
        """``{"name": "cgcnn", **constructor kwargs}`` (primitives only; rebuilds the model)."""
        return {"name": self.name, **self.cfg.model_dump()}
