"""ALIGNN (Choudhary & DeCost, npj Comput. Mater. 7, 185, 2021) on PyTorch Geometric batches.

Our own implementation in plain torch + :mod:`torch_geometric.utils` (no DGL, no torch-scatter):
the reference ``alignn.models.alignn.ALIGNN`` (usnistgov/alignn; PyPI ``alignn``) needs DGL,
which has no wheel for our pinned torch, and the package's DGL-free class
(``alignn_atomwise_pure``) is the atomwise force-field variant with its own graph inputs.  The
architecture follows the reference model and its default config (read for facts):

* inputs: CGCNN's 92-wide ``atom_init.json`` per element
  (:func:`matfuse.graphs.cgcnn_atom_init_table`, a persistent buffer as in :mod:`.cgcnn`) →
  ``Linear → BatchNorm → SiLU`` to ``hidden_features`` (256);
* bonds: ``|edge_vec|`` expanded in ``edge_input_features`` (80) Gaussian RBFs over 0–8 Å, then
  two ``Linear → BatchNorm → SiLU`` layers (→ ``embedding_features`` 64 → 256);
* angles: the cosine of the angle between two bonds that share an atom, in
  ``triplet_input_features`` (40) RBFs over −1..1, then the same two layers;
* RBF width as the reference's ``RBFExpansion``: ``exp(-γ (d - μ_k)²)`` with γ = 1 / (centre
  spacing);
* ``alignn_layers`` (4) ALIGNN layers — an edge-gated graph convolution on the atom graph
  (atoms, bonds) then one on the line graph (bonds, angles), the bond features passing from the
  first to the second — then ``gcn_layers`` (4) edge-gated convolutions on the atom graph;
* edge-gated graph convolution (Dwivedi et al. 2020's gated GCN as ALIGNN writes it): with
  ``m_ij = W_s h_j + W_d h_i + W_e e_ij`` and ``σ_ij = sigmoid(m_ij)``,
  ``h_i' = h_i + SiLU(BN(W_u h_i + Σ_j σ_ij ⊙ W_v h_j / (Σ_j σ_ij + 1e-6)))`` and
  ``e_ij' = e_ij + SiLU(BN(m_ij))`` (gates normalised over the neighbours, residual on both);
* average pooling over atoms and a linear head.

The graph is the project's shared crystal graph (:mod:`matfuse.graphs.build`: the 12 nearest
neighbours within 8 Å of every atom, directed neighbour → centre, with its bond vector
``edge_vec`` = neighbour image − centre).  The reference builds its own k-nearest graph (the
12-th neighbour's shell, made undirected); on an undirected graph DGL's line graph joins the
bonds ``a→b`` and ``b→c``, i.e. every ordered pair of bonds at atom ``b`` (including a bond
with itself, the "backtracking" pair of cosine 1).  Here the line graph is exactly that on our
directed graph: one node per edge, and an edge ``e1 → e2`` for every ordered pair of edges with
the same centre atom (``e1 = e2`` included), with feature ``cos θ = v1·v2 / (|v1||v2|)``.  It is
built inside the model from ``edge_index`` and ``edge_vec``, vectorised (:func:`line_graph`).

Cost: the line graph has Σ_i deg(i)² = 144 edges per atom, each carrying a 256-wide feature
through four layers, so ALIGNN is much heavier than CGCNN.  Measured with
``bench/bench_alignn.py --n 1000 --epochs 2`` (real MP structures of ≤ 20 sites, median 8; 800 in
training; batch 64; 1 thread on the shared 2-core machine, 2026-12-02): 88 s of CPU per epoch
(training + validation) (≈ 9 structures/s on an idle core; 153 s wall under load) against CGCNN's 0.7 s (127x), peak
RSS 4.3 GiB against 0.6 GiB.  (The reference's undirected graph has more than 12 bonds per atom,
so its line graph is larger still.)

Inputs (a PyG ``Batch``): ``z`` (atomic numbers, long), ``edge_index`` ([neighbour, centre]),
``edge_vec`` ``(E, 3)`` (Å), ``batch``.  A graphs table written before bond vectors were stored
has no ``edge_vec``: the model then raises a ``ValueError`` saying to rebuild the graphs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch_geometric.nn import global_mean_pool
from torch_geometric.utils import scatter

from matfuse.graphs import cgcnn_atom_init_table


class ALIGNNConfig(BaseModel):
    """Constructor settings of :class:`ALIGNN` (stored in checkpoints); defaults = the reference's."""

    model_config = ConfigDict(extra="forbid")

    alignn_layers: int = Field(4, ge=0, description="ALIGNN layers (atom graph + line graph).")
    gcn_layers: int = Field(4, ge=0, description="Edge-gated graph convolutions on the atom graph after them.")
    hidden_features: int = Field(256, ge=1)
    embedding_features: int = Field(64, ge=1, description="Width between the RBFs and the hidden width.")
    edge_input_features: int = Field(80, ge=2, description="Distance RBFs over 0..radius Å.")
    triplet_input_features: int = Field(40, ge=2, description="Angle-cosine RBFs over -1..1.")
    radius: float = Field(8.0, gt=0, description="Upper end of the distance RBFs (Å; the reference: 8, its cutoff).")


class RBFExpansion(nn.Module):
    """``exp(-γ (x - μ_k)²)`` for ``bins`` centres ``linspace(vmin, vmax)``, γ = 1 / spacing (ALIGNN's)."""

    def __init__(self, vmin: float, vmax: float, bins: int) -> None:
        super().__init__()
        self.register_buffer("centers", torch.linspace(vmin, vmax, bins))
        self.gamma = 1.0 / ((vmax - vmin) / (bins - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (x.unsqueeze(-1) - self.centers) ** 2)


def _mlp(in_features: int, out_features: int) -> nn.Sequential:
    """ALIGNN's ``MLPLayer``: Linear → BatchNorm → SiLU."""
    return nn.Sequential(nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features), nn.SiLU())


class EdgeGatedGraphConv(nn.Module):
    """One edge-gated graph convolution on an edge list (messages flow ``edge_index[0] → [1]``).

    Parameter names follow the reference (``src_gate`` acts on the sending node, ``dst_gate`` on
    the receiving one, ``dst_update`` is the message transform, ``src_update`` the self term).
    """

    def __init__(self, in_features: int, out_features: int, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.src_gate = nn.Linear(in_features, out_features)
        self.dst_gate = nn.Linear(in_features, out_features)
        self.edge_gate = nn.Linear(in_features, out_features)
        self.bn_edges = nn.BatchNorm1d(out_features)
        self.src_update = nn.Linear(in_features, out_features)
        self.dst_update = nn.Linear(in_features, out_features)
        self.bn_nodes = nn.BatchNorm1d(out_features)

    def forward(
        self, x: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(node features, edge features) after the update; shapes kept."""
        src, dst = edge_index[0], edge_index[1]
        n = x.shape[0]
        m = self.src_gate(x).index_select(0, src) + self.dst_gate(x).index_select(0, dst) + self.edge_gate(e)
        sigma = torch.sigmoid(m)
        msg = self.dst_update(x).index_select(0, src) * sigma
        num = scatter(msg, dst, dim=0, dim_size=n, reduce="sum")
        den = scatter(sigma, dst, dim=0, dim_size=n, reduce="sum")
        h = self.src_update(x) + num / (den + 1e-6)
        x_new = F.silu(self.bn_nodes(h))
        e_new = F.silu(self.bn_edges(m))
        if self.residual:
            x_new = x + x_new
            e_new = e + e_new
        return x_new, e_new


class ALIGNNConv(nn.Module):
    """One ALIGNN layer: an edge-gated convolution on the atom graph, then on the line graph."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.node_update = EdgeGatedGraphConv(in_features, out_features)
        self.edge_update = EdgeGatedGraphConv(out_features, out_features)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, edge_index: torch.Tensor, lg_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, m = self.node_update(x, edge_index, y)
        y, z = self.edge_update(m, lg_index, z)
        return x, y, z


def line_graph(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Line-graph edges ``(2, T)`` [e1, e2]: every ordered pair of edges with the same centre.

    The centre of an edge is ``edge_index[1]``; pairs include ``e1 == e2``; ``T = Σ_i deg(i)²``.
    Vectorised (argsort + repeat_interleave; no loop over atoms). Within one centre, ``e1`` runs
    over that centre's edges in their order in ``edge_index``.
    """
    dst = edge_index[1]
    n_edges = dst.shape[0]
    device = dst.device
    order = torch.argsort(dst, stable=True)  # edges grouped by centre
    deg = torch.bincount(dst, minlength=num_nodes)
    block_start = torch.cumsum(deg, 0) - deg  # first position of each centre's group in `order`
    per_edge = deg.index_select(0, dst)  # pairs ending in each edge e2
    e2 = torch.repeat_interleave(torch.arange(n_edges, device=device), per_edge)
    first = torch.cumsum(per_edge, 0) - per_edge
    local = torch.arange(e2.shape[0], device=device) - first.index_select(0, e2)
    e1 = order.index_select(0, block_start.index_select(0, dst.index_select(0, e2)) + local)
    return torch.stack([e1, e2])


def bond_cosines(edge_vec: torch.Tensor, lg_index: torch.Tensor) -> torch.Tensor:
    """``cos θ`` between the bond vectors of each line-graph edge (clamped to [-1, 1])."""
    v1 = edge_vec.index_select(0, lg_index[0])
    v2 = edge_vec.index_select(0, lg_index[1])
    cos = (v1 * v2).sum(-1) / (v1.norm(dim=-1) * v2.norm(dim=-1))
    return cos.clamp(-1.0, 1.0)


class ALIGNN(nn.Module):
    """Atomistic line graph neural network regressor (one scalar per crystal)."""

    name = "alignn"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = ALIGNNConfig(**kwargs)
        c = self.cfg
        table = torch.from_numpy(cgcnn_atom_init_table().copy())
        # Persistent buffer: the checkpoint carries the exact features it was trained with.
        self.register_buffer("atom_table", table)
        self.atom_embedding = _mlp(table.shape[1], c.hidden_features)
        self.edge_embedding = nn.Sequential(
            RBFExpansion(0.0, c.radius, c.edge_input_features),
            _mlp(c.edge_input_features, c.embedding_features),
            _mlp(c.embedding_features, c.hidden_features),
        )
        self.angle_embedding = nn.Sequential(
            RBFExpansion(-1.0, 1.0, c.triplet_input_features),
            _mlp(c.triplet_input_features, c.embedding_features),
            _mlp(c.embedding_features, c.hidden_features),
        )
        self.alignn_layers = nn.ModuleList(
            ALIGNNConv(c.hidden_features, c.hidden_features) for _ in range(c.alignn_layers)
        )
        self.gcn_layers = nn.ModuleList(
            EdgeGatedGraphConv(c.hidden_features, c.hidden_features) for _ in range(c.gcn_layers)
        )
        self.fc = nn.Linear(c.hidden_features, 1)

    @property
    def atom_dim(self) -> int:
        """Width of the atom-level features (:meth:`encode`'s first output)."""
        return self.cfg.hidden_features

    @property
    def embed_dim(self) -> int:
        """Width of the crystal vector (the average-pooled atom features)."""
        return self.cfg.hidden_features

    @staticmethod
    def bond_vectors(batch: Any) -> torch.Tensor:
        vec = getattr(batch, "edge_vec", None)
        if vec is None:
            raise ValueError(
                "ALIGNN needs bond vectors (edge_vec) but these graphs have none: the graphs table was "
                "written before matfuse stored them; rebuild it (e.g. snakemake --forcerun graphs, or delete "
                "results/graphs/<dataset>/graphs.parquet)"
            )
        return vec.float()

    def encode(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Atom features ``(N, hidden)`` after all layers and crystal vectors ``(B, hidden)`` (mean)."""
        vec = self.bond_vectors(batch)
        edge_index = batch.edge_index
        x = self.atom_embedding(self.atom_table[batch.z])
        y = self.edge_embedding(vec.norm(dim=-1))
        if len(self.alignn_layers):
            lg_index = line_graph(edge_index, x.shape[0])
            z = self.angle_embedding(bond_cosines(vec, lg_index))
            for layer in self.alignn_layers:
                x, y, z = layer(x, y, z, edge_index, lg_index)
        for gcn in self.gcn_layers:
            x, y = gcn(x, edge_index, y)
        crys = global_mean_pool(x, batch.batch, size=batch.num_graphs)
        return x, crys

    def embed(self, batch: Any) -> torch.Tensor:
        """Crystal vector before the output layer, ``(B, hidden)``."""
        return self.encode(batch)[1]

    def forward(self, batch: Any) -> torch.Tensor:
        """Predictions, shape ``(B,)`` (in normalised target units)."""
        return self.fc(self.embed(batch)).squeeze(-1)

    def to_config(self) -> dict[str, Any]:
        """``{"name": "alignn", **constructor kwargs}`` (primitives only; rebuilds the model)."""
        return {"name": self.name, **self.cfg.model_dump()}
