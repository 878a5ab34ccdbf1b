"""CroMEL building blocks: a small structure encoder, the critic and the WGAN-GP losses.

* :func:`structure_graph` / :func:`collate_graphs`: radius graph of a pymatgen ``Structure``
  (``get_neighbor_list``, up to ``max_neighbors`` nearest neighbours per site) as numpy
  arrays, and their concatenation into one batch.
* :class:`StructureEncoder`: a compact CGCNN-style network (gated edge convolutions over
  Gaussian-expanded distances, mean pooling) whose output is L2-normalised, as the structure
  embedding of the CroMEL code; :class:`StructureRegressor` adds the linear source head.
* :class:`Critic`, :func:`gradient_penalty`, :func:`critic_loss`, :func:`generator_loss`:
  Wasserstein critic with gradient penalty (Gulrajani et al. 2017) between structure
  embeddings ("real") and composition embeddings ("fake").
* :func:`empirical_wasserstein`: the exact Wasserstein-1 distance between two equal-size
  point clouds (optimal assignment), a critic-free check that alignment works;
  :func:`sliced_wasserstein` a cheaper projection-based variant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from matfuse.models.composition import MAX_Z, element_property_table

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- graphs
@dataclass
class Graph:
    """One crystal: atomic numbers, directed edges (src -> dst) and their lengths (Å)."""

    z: np.ndarray  # (n_atoms,) int64
    src: np.ndarray  # (n_edges,) int64
    dst: np.ndarray  # (n_edges,) int64
    dist: np.ndarray  # (n_edges,) float32


def structure_graph(structure: Any, cutoff: float = 6.0, max_neighbors: int = 12) -> Graph:
    """Radius graph of a pymatgen ``Structure`` (periodic images included).

    Each site keeps its ``max_neighbors`` nearest neighbours within ``cutoff``. Raises
    ``ValueError`` for disordered sites, elements beyond Lr, or a site with no neighbour.
    """
    if not structure.is_ordered:
        raise ValueError("disordered (partially occupied) sites are not supported")
    z = np.array([site.specie.Z for site in structure], dtype=np.int64)
    if z.max() > MAX_Z:
        raise ValueError(f"element with Z={int(z.max())} beyond Z={MAX_Z}")
    centers, points, _, dists = structure.get_neighbor_list(r=cutoff)
    keep = dists > 1e-8
    centers, points, dists = centers[keep], points[keep], dists[keep]
    order = np.lexsort((dists, centers))
    centers, points, dists = centers[order], points[order], dists[order]
    # rank of each edge among its centre's neighbours (edges are grouped by centre)
    starts = np.searchsorted(centers, centers, side="left")
    rank = np.arange(len(centers)) - starts
    keep = rank < max_neighbors
    centers, points, dists = centers[keep], points[keep], dists[keep]
    isolated = np.setdiff1d(np.arange(len(z)), centers)
    if len(isolated):
        raise ValueError(f"site {int(isolated[0])} has no neighbour within {cutoff} Å")
    return Graph(z=z, src=points.astype(np.int64), dst=centers.astype(np.int64), dist=dists.astype(np.float32))


@dataclass
class GraphBatch:
    """Several graphs concatenated; ``crystal`` maps each atom to its graph."""

    z: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    dist: torch.Tensor
    crystal: torch.Tensor
    n_graphs: int

    def to(self, device: torch.device | str) -> "GraphBatch":
        return GraphBatch(
            self.z.to(device), self.src.to(device), self.dst.to(device), self.dist.to(device),
            self.crystal.to(device), self.n_graphs,
        )


def collate_graphs(graphs: Sequence[Graph]) -> GraphBatch:
    """Concatenate graphs, offsetting edge indices."""
    offsets = np.cumsum([0] + [len(g.z) for g in graphs[:-1]])
    return GraphBatch(
        z=torch.from_numpy(np.concatenate([g.z for g in graphs])),
        src=torch.from_numpy(np.concatenate([g.src + o for g, o in zip(graphs, offsets)])),
        dst=torch.from_numpy(np.concatenate([g.dst + o for g, o in zip(graphs, offsets)])),
        dist=torch.from_numpy(np.concatenate([g.dist for g in graphs])),
        crystal=torch.from_numpy(np.repeat(np.arange(len(graphs)), [len(g.z) for g in graphs])),
        n_graphs=len(graphs),
    )


# --------------------------------------------------------------------------- structure encoder
class _GatedConv(nn.Module):
    """CGCNN convolution: v_i += sum_j sigmoid(W_f z_ij) * softplus(W_s z_ij), z_ij = [v_i, v_j, e_ij]."""

    def __init__(self, dim: int, edge_dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(2 * dim + edge_dim, 2 * dim)
        self.bn1 = nn.BatchNorm1d(2 * dim)
        self.bn2 = nn.BatchNorm1d(dim)

    def forward(self, v: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.bn1(self.lin(torch.cat([v[dst], v[src], e], dim=-1)))
        gate, core = h.chunk(2, dim=-1)
        msg = torch.sigmoid(gate) * nn.functional.softplus(core)
        agg = torch.zeros_like(v).index_add_(0, dst, msg)
        return nn.functional.softplus(v + self.bn2(agg))


class StructureEncoder(nn.Module):
    """Small CGCNN-like structure encoder with an L2-normalised output.

    Atoms start from the fixed pymatgen element-property table (linear embedding), edges
    from a Gaussian expansion of their length on ``[0, cutoff]`` with step ``gaussian_step``.
    """

    def __init__(
        self,
        hidden_dim: int = 64,
        n_conv: int = 3,
        latent_dim: int = 64,
        cutoff: float = 6.0,
        gaussian_step: float = 0.4,
    ) -> None:
        super().__init__()
        self.config = dict(
            hidden_dim=hidden_dim, n_conv=n_conv, latent_dim=latent_dim, cutoff=cutoff, gaussian_step=gaussian_step
        )
        self.register_buffer("element_features", torch.from_numpy(element_property_table()))
        self.register_buffer("centers", torch.arange(0.0, cutoff + 1e-6, gaussian_step))
        self.width = gaussian_step
        self.embed = nn.Linear(self.element_features.shape[1], hidden_dim)
        self.convs = nn.ModuleList(_GatedConv(hidden_dim, len(self.centers)) for _ in range(n_conv))
        self.out = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.Softplus(), nn.Linear(hidden_dim, latent_dim))

    @property
    def latent_dim(self) -> int:
        return int(self.config["latent_dim"])

    def forward(self, g: GraphBatch) -> torch.Tensor:
        v = self.embed(self.element_features[g.z])
        e = torch.exp(-((g.dist.unsqueeze(-1) - self.centers) ** 2) / self.width**2)
        for conv in self.convs:
            v = conv(v, g.src, g.dst, e)
        counts = torch.zeros(g.n_graphs, device=v.device).index_add_(0, g.crystal, torch.ones_like(g.crystal, dtype=v.dtype))
        pooled = torch.zeros(g.n_graphs, v.shape[1], device=v.device).index_add_(0, g.crystal, v) / counts.unsqueeze(-1)
        return nn.functional.normalize(self.out(pooled), p=2, dim=-1)


class StructureRegressor(nn.Module):
    """Structure encoder + linear source head (standardised target units)."""

    def __init__(self, encoder: StructureEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.latent_dim, 1)

    @classmethod
    def from_kwargs(cls, encoder: dict[str, Any]) -> "StructureRegressor":
        """Build from :meth:`to_config`'s kwargs (the registry's factory)."""
        return cls(StructureEncoder(**encoder))

    def to_config(self) -> dict[str, Any]:
        return {"name": "cromel_structure", "encoder": dict(self.encoder.config)}

    def forward(self, g: GraphBatch) -> torch.Tensor:
        return self.head(self.encoder(g)).squeeze(-1)


# --------------------------------------------------------------------------- critic
class Critic(nn.Module):
    """1-Lipschitz-ish critic on latent vectors (no normalisation layers: GP needs per-sample gradients)."""

    def __init__(self, latent_dim: int = 64, hidden_dim: int = 64) -> None:
        super().__init__()
        self.config = dict(latent_dim=latent_dim, hidden_dim=hidden_dim)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.LeakyReLU(0.2), nn.Linear(hidden_dim, hidden_dim),
            nn.LeakyReLU(0.2), nn.Linear(hidden_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` at ``x_hat = alpha*real + (1-alpha)*fake``.

    ``alpha`` (shape ``(N, 1)``) defaults to uniform random numbers; the graph is kept so the
    penalty can be back-propagated into the critic.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


def critic_loss(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Critic loss ``E[D(fake)] - E[D(real)] + gp_weight * GP`` and the Wasserstein estimate.

    Both inputs are detached (only the critic learns from this loss). Returns
    ``(loss, w_estimate)`` with ``w_estimate = E[D(real)] - E[D(fake)]`` (no gradient).
    """
    d_real = critic(real.detach()).mean()
    d_fake = critic(fake.detach()).mean()
    gp = gradient_penalty(critic, real, fake)
    return d_fake - d_real + gp_weight * gp, (d_real - d_fake).detach()


def generator_loss(critic: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """Generator (composition encoder) side of the Wasserstein loss: ``-E[D(fake)]``."""
    return -critic(fake).mean()


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two point clouds of the same dimension.

    Average over random unit directions of the 1-D Wasserstein-1 distance between the
    projected samples (computed from quantile functions, so sizes may differ).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (n, d) arrays with the same d, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((a.shape[1], n_projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    # 1-D W1 = integral over q of |F_a^-1(q) - F_b^-1(q)|; evaluate on the union of the
    # two empirical CDF step locations.
    qa = np.arange(1, len(pa) + 1) / len(pa)
    qb = np.arange(1, len(pb) + 1) / len(pb)
    q = np.union1d(qa, qb)
    dq = np.diff(np.concatenate([[0.0], q]))
    ia = np.minimum(np.searchsorted(qa, q - 1e-12), len(pa) - 1)
    ib = np.minimum(np.searchsorted(qb, q - 1e-12), len(pb) - 1)
    return float((np.abs(pa[ia] - pb[ib]) * dq[:, None]).sum(0).mean())


def empirical_wasserstein(a: np.ndarray, b: np.ndarray, max_n: int = 1000, seed: int = 0) -> float:
    """Exact Wasserstein-1 distance between the empirical distributions of two point clouds.

    For equal sizes this is the minimum-cost perfect matching under Euclidean cost
    (``scipy.optimize.linear_sum_assignment``), divided by n. Larger or unequal clouds are
    first subsampled (seeded, without replacement) to ``min(len(a), len(b), max_n)`` points.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (n, d) arrays with the same d, got {a.shape} and {b.shape}")
    n = min(len(a), len(b), max_n)
    rng = np.random.default_rng(seed)
    if len(a) > n:
        a = a[rng.choice(len(a), n, replace=False)]
    if len(b) > n:
        b = b[rng.choice(len(b), n, replace=False)]
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())
