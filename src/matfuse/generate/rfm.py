"""Riemannian flow matching (RFM) on fractional coordinates × lattice parameters (FlowMM / FlowLLM).

The state of a crystal with fixed atom types is ``(x, y)``: fractional coordinates ``x`` on the
flat torus [0, 1)^(3N) and six lattice parameters ``y`` in Euclidean space (log lengths, and the
angles as (θ − 90°)/30°, which is [−1, 1] over the 60°–120° of Niggli-reduced cells; then
standardised with the training targets' mean and std). A network ``v_θ(x_t, y_t, t)``
is regressed onto the conditional vector field of the wrapped geodesic from a base sample
``(x0, y0)`` to a data crystal ``(x1, y1)``:

    x_t = exp(x0, t · u),  u = log(x0, x1) − mean over atoms   (the mean removes a translation)
    y_t = y0 + t (y1 − y0),  u_y = y1 − y0
    loss = mean_crystals[ mean_atoms |v_x − u|² + w_lattice · |v_y − u_y|² ]

Bases (atom types are fixed by the base sample): ``lm`` — the LM's formula-conditioned sample of a
training crystal's composition (FlowLLM; the pair is kept when the written species match, atoms of
one element matched to the data's by a minimum-cost assignment on the torus); ``simple`` —
FlowMM's: uniform coordinates, log-normal lengths (fit on the training crystals), uniform angles
in [60°, 120°], with the data crystal's composition. Sampling integrates the learned field from
t = 0 to 1 with ``steps`` Euler steps on the torus.

The network (:class:`CrystalFlow`) is a periodic message-passing net in the style of DiffCSP's
CSPNet (Jiao et al. 2023, MIT): a fully connected graph inside each cell, messages from both
atoms' features, the lattice parameters and Fourier features sin/cos(2πk Δx) of the wrapped
fractional difference (invariant to translations and periodic), mean aggregation with
``torch_geometric.utils.scatter``, residual node updates; coordinate velocities per atom
(mean-free), lattice velocities from the mean-pooled nodes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from pymatgen.core import Lattice, Structure
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch_geometric.utils import scatter

from matfuse import kit
from matfuse.generate import torus

log = logging.getLogger(__name__)

ANGLE_LO, ANGLE_HI = 60.0, 120.0
ANGLE_MID, ANGLE_HALF = 90.0, 30.0


# --------------------------------------------------------------------------- lattice parameters
def lattice_to_params(lengths: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """``[log a, log b, log c, (α−90°)/30°, (β−90°)/30°, (γ−90°)/30°]`` (Niggli angles: in [−1, 1])."""
    lengths = np.asarray(lengths, dtype=float)
    ang = np.asarray(angles, dtype=float)
    return np.concatenate([np.log(lengths), (ang - ANGLE_MID) / ANGLE_HALF], axis=-1)


def params_to_lattice(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`lattice_to_params`: (lengths Å, angles degrees); angles are clipped into
    [60°, 120°] (the Niggli range the flow is trained on) and lengths to [e^-5, e^6] Å."""
    params = np.asarray(params, dtype=float)
    lengths = np.exp(np.clip(params[..., :3], -5, 6))
    angles = np.clip(ANGLE_MID + ANGLE_HALF * params[..., 3:], ANGLE_LO, ANGLE_HI)
    return lengths, angles


def structure_params(s: Structure) -> np.ndarray:
    return lattice_to_params(np.array(s.lattice.abc), np.array(s.lattice.angles))


@dataclass
class Crystal:
    """A crystal as the flow sees it: atomic numbers, fractional coordinates, lattice parameters (raw)."""

    z: np.ndarray  # (N,) int
    frac: np.ndarray  # (N, 3) in [0, 1)
    lat: np.ndarray  # (6,) lattice_to_params

    @classmethod
    def from_structure(cls, s: Structure) -> "Crystal":
        if not s.is_ordered:
            raise ValueError("disordered structure")
        return cls(np.array([site.specie.Z for site in s], dtype=np.int64), np.mod(s.frac_coords, 1.0),
                   structure_params(s))

    def to_structure(self) -> Structure:
        lengths, angles = params_to_lattice(self.lat)
        return Structure(Lattice.from_parameters(*lengths, *angles), [int(z) for z in self.z],
                         torus.wrap(self.frac), coords_are_cartesian=False)


# --------------------------------------------------------------------------- base distributions
@dataclass
class SimpleBase:
    """FlowMM's simple base: uniform coordinates, log-normal lengths, uniform angles in [60°, 120°]."""

    log_length_mean: list[float]
    log_length_std: list[float]

    @classmethod
    def fit(cls, crystals: Sequence[Crystal]) -> "SimpleBase":
        logs = np.stack([c.lat[:3] for c in crystals])
        return cls([float(v) for v in logs.mean(0)], [float(max(v, 1e-3)) for v in logs.std(0)])

    def sample(self, z: np.ndarray, rng: np.random.Generator) -> Crystal:
        lengths = np.exp(rng.normal(self.log_length_mean, self.log_length_std))
        angles = rng.uniform(ANGLE_LO, ANGLE_HI, size=3)
        return Crystal(np.asarray(z, dtype=np.int64), rng.random((len(z), 3)), lattice_to_params(lengths, angles))

    def to_dict(self) -> dict[str, list[float]]:
        return {"log_length_mean": list(self.log_length_mean), "log_length_std": list(self.log_length_std)}


def _assign(base: Crystal, data: Crystal, shift: np.ndarray) -> tuple[float, np.ndarray]:
    frac = torus.wrap(base.frac + shift)
    order = np.empty(len(data.z), dtype=np.int64)
    total = 0.0
    for z in np.unique(data.z):
        di = np.flatnonzero(data.z == z)
        bi = np.flatnonzero(base.z == z)
        cost = (torus.log_map(frac[bi][None, :, :], data.frac[di][:, None, :]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        order[di[rows]] = bi[cols]
        total += float(cost[rows, cols].sum())
    return total, order


def match_atoms(base: Crystal, data: Crystal) -> Crystal | None:
    """``base`` translated and reordered so that atom i has ``data``'s element i; ``None`` when the
    species multisets differ.

    Each element's atoms are assigned by minimum total squared torus distance (Hungarian), over
    the translations that put one base atom of the rarest element onto the data's first atom of
    it (the origin of either crystal is arbitrary; a translated base sample is the same crystal).
    """
    if len(base.z) != len(data.z) or sorted(base.z.tolist()) != sorted(data.z.tolist()):
        return None
    els, counts = np.unique(data.z, return_counts=True)
    rare = els[np.argmin(counts)]
    anchor = data.frac[np.flatnonzero(data.z == rare)[0]]
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for b in np.flatnonzero(base.z == rare):
        shift = anchor - base.frac[b]
        total, order = _assign(base, data, shift)
        if best is None or total < best[0]:
            best = (total, order, shift)
    assert best is not None
    _, order, shift = best
    return Crystal(base.z[order], torus.wrap(base.frac[order] + shift), base.lat.copy())


# --------------------------------------------------------------------------- the network
class CSPLayer(nn.Module):
    """One periodic message-passing layer (DiffCSP's CSPNet layer, fully connected per cell)."""

    def __init__(self, hidden: int, n_freq: int, lat_dim: int = 6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.edge = nn.Sequential(nn.Linear(2 * hidden + lat_dim + 6 * n_freq, hidden), nn.SiLU(),
                                  nn.Linear(hidden, hidden), nn.SiLU())
        self.node = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, n_freq + 1, dtype=torch.float32), persistent=False)

    def forward(self, h: torch.Tensor, frac: torch.Tensor, lat: torch.Tensor, edge_index: torch.Tensor,
                batch: torch.Tensor) -> torch.Tensor:
        i, j = edge_index
        hn = self.norm(h)
        d = (frac[j] - frac[i])[..., None] * self.freqs  # (E, 3, K)
        ff = torch.cat([torch.sin(d), torch.cos(d)], dim=-1).flatten(1)
        m = self.edge(torch.cat([hn[i], hn[j], lat[batch[i]], ff], dim=-1))
        agg = scatter(m, i, dim=0, dim_size=h.shape[0], reduce="mean")
        return h + self.node(torch.cat([hn, agg], dim=-1))


class CrystalFlow(nn.Module):
    """The RFM vector field ``(v_x per atom, v_y per crystal)`` of :mod:`matfuse.generate.rfm`."""

    name = "flowllm_rfm"

    def __init__(
        self,
        hidden: int = 128,
        n_layers: int = 4,
        n_freq: int = 8,
        time_dim: int = 32,
        max_z: int = 119,
        lat_mean: Sequence[float] = (0.0,) * 6,
        lat_std: Sequence[float] = (1.0,) * 6,
    ) -> None:
        super().__init__()
        self.kwargs: dict[str, Any] = dict(hidden=hidden, n_layers=n_layers, n_freq=n_freq, time_dim=time_dim,
                                           max_z=max_z, lat_mean=[float(v) for v in lat_mean],
                                           lat_std=[float(v) for v in lat_std])
        self.embed = nn.Embedding(max_z + 1, hidden)
        self.time = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.layers = nn.ModuleList(CSPLayer(hidden, n_freq) for _ in range(n_layers))
        self.out_norm = nn.LayerNorm(hidden)
        self.coord_out = nn.Linear(hidden, 3, bias=False)
        self.lat_out = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 6))
        self.register_buffer("lat_mean", torch.tensor(self.kwargs["lat_mean"], dtype=torch.float32), persistent=False)
        self.register_buffer("lat_std", torch.tensor(self.kwargs["lat_std"], dtype=torch.float32), persistent=False)
        half = time_dim // 2
        self.register_buffer("time_freqs", torch.exp(-math.log(1000.0) * torch.arange(half) / max(half - 1, 1)),
                             persistent=False)

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.kwargs}

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def standardize(self, lat: torch.Tensor) -> torch.Tensor:
        return (lat - self.lat_mean) / self.lat_std

    def unstandardize(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.lat_std + self.lat_mean

    def _time_features(self, t: torch.Tensor) -> torch.Tensor:
        a = t[:, None] * 1000.0 * self.time_freqs
        return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)

    def forward(self, z: torch.Tensor, frac: torch.Tensor, y: torch.Tensor, t: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocities at ``(frac, y)`` (``y`` standardised lattice parameters, one row per crystal)."""
        n_graphs = y.shape[0]
        h = self.embed(z) + self.time(self._time_features(t))[batch]
        for layer in self.layers:
            h = layer(h, frac, y, edge_index, batch)
        h = self.out_norm(h)
        v = self.coord_out(h)
        v = v - scatter(v, batch, dim=0, dim_size=n_graphs, reduce="mean")[batch]  # no net translation
        vy = self.lat_out(scatter(h, batch, dim=0, dim_size=n_graphs, reduce="mean"))
        return v, vy


def full_edges(counts: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Edges i→j between every two distinct atoms of each crystal (atoms numbered crystal by crystal)."""
    parts, offset = [], 0
    for n in counts:
        idx = torch.arange(n)
        ii, jj = torch.meshgrid(idx, idx, indexing="ij")
        keep = ii != jj
        parts.append(torch.stack([ii[keep], jj[keep]]) + offset)
        offset += n
    return torch.cat(parts, dim=1).to(device) if parts else torch.zeros((2, 0), dtype=torch.long, device=device)


# --------------------------------------------------------------------------- flow matching
def conditional_path(
    x0: torch.Tensor, x1: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, t: torch.Tensor, batch: torch.Tensor,
    center: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_t, y_t, u, u_y)``: the point at time ``t`` (one per crystal) of the wrapped geodesic from
    ``(x0, y0)`` to ``(x1, y1)`` and its (constant) velocity — the log map, made mean-free per
    crystal when ``center`` (the end point then is ``x1`` translated, the same crystal)."""
    u = torus.log_map(x0, x1)
    if center:
        u = u - scatter(u, batch, dim=0, dim_size=y0.shape[0], reduce="mean")[batch]
    xt = torus.exp_map(x0, t[batch, None] * u)
    uy = y1 - y0
    yt = y0 + t[:, None] * uy
    return xt, yt, u, uy


def flow_matching_loss(
    v: torch.Tensor, vy: torch.Tensor, u: torch.Tensor, uy: torch.Tensor, batch: torch.Tensor,
    lattice_weight: float = 1.0,
) -> torch.Tensor:
    """Mean over crystals of (mean over atoms |v − u|²) + ``lattice_weight`` · |v_y − u_y|²."""
    n_graphs = uy.shape[0]
    per_atom = ((v - u) ** 2).sum(-1)
    coord = scatter(per_atom, batch, dim=0, dim_size=n_graphs, reduce="mean")
    lat = ((vy - uy) ** 2).sum(-1)
    return (coord + lattice_weight * lat).mean()


@dataclass
class FlowBatch:
    z: torch.Tensor
    x0: torch.Tensor
    x1: torch.Tensor
    y0: torch.Tensor  # standardised
    y1: torch.Tensor
    batch: torch.Tensor
    edge_index: torch.Tensor
    counts: list[int]


def collate(pairs: Sequence[tuple[Crystal, Crystal]], model: CrystalFlow, device: torch.device) -> FlowBatch:
    """(base, data) pairs with the same atom order -> tensors on ``device``."""
    counts = [len(d.z) for _, d in pairs]
    z = torch.as_tensor(np.concatenate([d.z for _, d in pairs]), dtype=torch.long, device=device)
    x0 = torch.as_tensor(np.concatenate([b.frac for b, _ in pairs]), dtype=torch.float32, device=device)
    x1 = torch.as_tensor(np.concatenate([d.frac for _, d in pairs]), dtype=torch.float32, device=device)
    y0 = model.standardize(torch.as_tensor(np.stack([b.lat for b, _ in pairs]), dtype=torch.float32, device=device))
    y1 = model.standardize(torch.as_tensor(np.stack([d.lat for _, d in pairs]), dtype=torch.float32, device=device))
    batch = torch.repeat_interleave(torch.arange(len(counts), device=device), torch.as_tensor(counts, device=device))
    return FlowBatch(z, x0, x1, y0, y1, batch, full_edges(counts, device), counts)


def batch_loss(model: CrystalFlow, fb: FlowBatch, t: torch.Tensor, lattice_weight: float) -> torch.Tensor:
    xt, yt, u, uy = conditional_path(fb.x0, fb.x1, fb.y0, fb.y1, t, fb.batch)
    v, vy = model(fb.z, xt, yt, t, fb.batch, fb.edge_index)
    return flow_matching_loss(v, vy, u, uy, fb.batch, lattice_weight)


# --------------------------------------------------------------------------- training
@dataclass
class RFMSettings:
    hidden: int = 128
    n_layers: int = 4
    n_freq: int = 8
    time_dim: int = 32
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.05
    lattice_weight: float = 1.0
    val_fraction: float = 0.1
    patience: int = 1000
    device: str = "cpu"


def train_rfm(
    targets: Sequence[Crystal],
    base: str,
    settings: RFMSettings,
    lm_bases: Sequence[Sequence[Crystal]] | None = None,
    simple: SimpleBase | None = None,
    seed: int = 0,
) -> tuple[CrystalFlow, dict[str, Any]]:
    """Train the vector field on ``targets`` from base ``"lm"`` (``lm_bases[i]``: LM samples with
    target i's species; one drawn per epoch) or ``"simple"`` (a fresh :class:`SimpleBase` draw per
    epoch). A seeded ``val_fraction`` of the targets (with fixed base draws and times) gives the
    validation loss the kit's loop selects on. Returns (model, summary)."""
    if base not in ("lm", "simple"):
        raise ValueError(f"unknown base {base!r} (lm, simple)")
    if base == "lm" and (lm_bases is None or len(lm_bases) != len(targets) or any(not b for b in lm_bases)):
        raise ValueError("base 'lm' needs one non-empty list of matched LM samples per target")
    if len(targets) < 2:
        raise ValueError(f"need at least 2 target crystals, got {len(targets)}")
    kit.seed_everything(seed)
    device = kit.resolve_device(settings.device)
    rng = np.random.default_rng(seed)
    simple = simple or SimpleBase.fit(targets)
    order = rng.permutation(len(targets))
    n_val = max(1, int(round(settings.val_fraction * len(targets))))
    val_idx, train_idx = order[:n_val], order[n_val:]
    lat = np.stack([targets[i].lat for i in train_idx])
    model = CrystalFlow(settings.hidden, settings.n_layers, settings.n_freq, settings.time_dim,
                        lat_mean=lat.mean(0), lat_std=np.maximum(lat.std(0), 1e-3)).to(device)

    def draw(i: int, r: np.random.Generator) -> Crystal:
        if base == "lm":
            cands = lm_bases[i]
            return cands[int(r.integers(len(cands)))]
        return simple.sample(targets[i].z, r)

    vr = np.random.default_rng(seed + 1)
    val_pairs = [(draw(i, vr), targets[i]) for i in val_idx]
    val_t = torch.as_tensor(vr.random(len(val_pairs)), dtype=torch.float32, device=device)
    n_batches = math.ceil(len(train_idx) / settings.batch_size)
    opt = kit.make_optimizer(model.parameters(), "adamw", settings.lr, settings.weight_decay)
    sched = kit.lr_schedule(opt, "cosine", n_batches * settings.epochs, warmup=settings.warmup)

    def batches():
        perm = rng.permutation(train_idx)
        for k in range(0, len(perm), settings.batch_size):
            yield [(draw(i, rng), targets[i]) for i in perm[k: k + settings.batch_size]]

    def loss_of(pairs):
        fb = collate(pairs, model, device)
        t = torch.as_tensor(rng.random(len(pairs)), dtype=torch.float32, device=device)
        return batch_loss(model, fb, t, settings.lattice_weight), len(pairs)

    def validate() -> float:
        model.eval()
        total = 0.0
        with torch.no_grad():
            for k in range(0, len(val_pairs), settings.batch_size):
                chunk = val_pairs[k: k + settings.batch_size]
                fb = collate(chunk, model, device)
                total += float(batch_loss(model, fb, val_t[k: k + len(chunk)], settings.lattice_weight)) * len(chunk)
        return total / len(val_pairs)

    t0 = time.perf_counter()
    result = kit.fit(model, opt, epochs=settings.epochs, patience=settings.patience, batches=batches,
                     loss_of=loss_of, validate=validate, desc=f"flowllm_rfm[{base}]", scheduler_step=sched)
    summary = {
        "base": base, "n_parameters": model.n_parameters(), "n_targets": len(targets), "n_train": len(train_idx),
        "n_val": len(val_idx), "best_epoch": result.best_epoch, "best_val_loss": result.best_val_mae,
        "epochs_run": result.epochs_run, "train_seconds": result.train_seconds,
        "seconds": time.perf_counter() - t0, "simple_base": simple.to_dict(),
        "history": [{"epoch": h["epoch"], "train_loss": h["train_loss"], "val_loss": h["val_mae"],
                     "seconds": h["seconds"]} for h in result.history],
    }
    model.eval()
    return model, summary


# --------------------------------------------------------------------------- integration
@torch.no_grad()
def integrate(
    model: CrystalFlow, bases: Sequence[Crystal], steps: int = 50, batch_size: int = 64,
) -> list[Crystal]:
    """Euler integration of the learned field from t = 0 to 1 (``steps`` steps, on the torus for
    the coordinates); one output crystal per base crystal, same atom types."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    model.eval()
    device = next(model.parameters()).device
    out: list[Crystal] = []
    dt = 1.0 / steps
    for k in range(0, len(bases), batch_size):
        chunk = list(bases[k: k + batch_size])
        fb = collate([(b, b) for b in chunk], model, device)
        x, y = fb.x0.clone(), fb.y0.clone()
        for s in range(steps):
            t = torch.full((len(chunk),), s * dt, device=device)
            v, vy = model(fb.z, x, y, t, fb.batch, fb.edge_index)
            x = torus.exp_map(x, dt * v)
            y = y + dt * vy
        lat = model.unstandardize(y).cpu().numpy().astype(float)
        frac = x.cpu().numpy().astype(float)
        offset = 0
        for b, n, row in zip(chunk, fb.counts, lat):
            out.append(Crystal(b.z.copy(), torus.wrap(frac[offset: offset + n]), row))
            offset += n
    return out
