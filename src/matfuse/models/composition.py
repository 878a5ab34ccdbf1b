"""Composition-only encoder: element embeddings pooled by fraction-weighted mean, min and max.

A formula is turned into a padded pair of tensors (element index, atomic fraction) by
:func:`featurize_compositions`. :class:`CompositionEncoder` looks the elements up in an
embedding table (learned, optionally initialised from standardised pymatgen element
properties, :func:`element_property_table`), pools them with the fraction-weighted mean and
the element-wise min and max (the composition vector of Na's CroMEL code, there over fixed
Matscholar embeddings), and maps the 3*d vector through an MLP to a latent vector.

Pooling is over the *set* of elements, so the result does not depend on the order in which a
formula lists them; only atomic fractions enter, so ``Fe2O3`` and ``Fe4O6`` give the same
vector.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

#: Highest atomic number the element table covers (Lr); index 0 is padding.
MAX_Z = 103

#: pymatgen ``Element`` attributes used as element features (numeric ones, plus ``block``).
ELEMENT_PROPERTIES: tuple[str, ...] = (
    "X",
    "row",
    "group",
    "atomic_radius",
    "atomic_mass",
    "mendeleev_no",
    "ionization_energy",
    "electron_affinity",
    "average_ionic_radius",
    "molar_volume",
    "melting_point",
)
_BLOCKS = ("s", "p", "d", "f")


@lru_cache(maxsize=1)
def element_property_table() -> np.ndarray:
    """Standardised pymatgen element properties, shape ``(MAX_Z + 1, n_features)``.

    Row ``Z`` describes element ``Z``; row 0 (padding) is zero. Numeric properties are
    standardised over Z = 1..103 and missing values (e.g. the electronegativity of noble
    gases) are set to 0, the mean, with one extra 0/1 column per property flagging that the
    value was missing; ``block`` is one-hot (s, p, d, f).
    """
    from pymatgen.core import Element

    n = MAX_Z
    numeric = np.full((n, len(ELEMENT_PROPERTIES)), np.nan)
    blocks = np.zeros((n, len(_BLOCKS)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, n + 1):
            el = Element.from_Z(z)
            for j, name in enumerate(ELEMENT_PROPERTIES):
                try:
                    value = getattr(el, name)
                except Exception:  # pymatgen raises for a few undefined data
                    value = None
                if value is not None:
                    numeric[z - 1, j] = float(value)
            blocks[z - 1, _BLOCKS.index(el.block)] = 1.0
    missing = np.isnan(numeric)
    mean = np.nanmean(numeric, axis=0)
    std = np.nanstd(numeric, axis=0)
    std[std == 0] = 1.0
    numeric = np.where(missing, 0.0, (numeric - mean) / std)
    # Only keep a "missing" flag column for properties that are missing somewhere.
    flags = missing[:, missing.any(axis=0)].astype(float)
    table = np.concatenate([numeric, flags, blocks], axis=1)
    return np.vstack([np.zeros((1, table.shape[1])), table]).astype(np.float32)


@dataclass
class CompositionBatch:
    """Padded element indices (atomic numbers, 0 = padding) and atomic fractions."""

    index: torch.Tensor  # (N, M) long
    fraction: torch.Tensor  # (N, M) float, rows sum to 1

    def to(self, device: torch.device | str) -> "CompositionBatch":
        return CompositionBatch(self.index.to(device), self.fraction.to(device))

    def __getitem__(self, rows: Any) -> "CompositionBatch":
        return CompositionBatch(self.index[rows], self.fraction[rows])

    def __len__(self) -> int:
        return int(self.index.shape[0])


def matscholar_table() -> np.ndarray:
    """``(MAX_Z + 1, 200)`` Matscholar element embeddings (Tshitoyan et al. 2019) as shipped in matminer
    (``matminer/utils/data_files/matscholar_els.json``); rows of elements it lacks (and row 0) are zero."""
    import json
    from importlib.resources import files

    from pymatgen.core import Element

    data = json.loads(files("matminer.utils.data_files").joinpath("matscholar_els.json").read_text())
    width = len(next(iter(data.values())))
    out = np.zeros((MAX_Z + 1, width), dtype=np.float32)
    for symbol, vec in data.items():
        z = Element(symbol).Z
        if z <= MAX_Z:
            out[z] = np.asarray(vec, dtype=np.float32)
    return out


def parse_composition(formula: str) -> dict[int, float]:
    """Atomic number -> atomic fraction of ``formula`` (pymatgen ``Composition``).

    Raises ``ValueError`` naming the formula when it cannot be parsed, is empty, has
    non-positive amounts or contains an element beyond Lr (Z > 103).
    """
    from pymatgen.core import Composition, Element

    try:
        comp = Composition(formula)
        amounts = {Element(el).Z: float(amt) for el, amt in comp.get_el_amt_dict().items()}
    except Exception as exc:  # pymatgen raises several types
        raise ValueError(f"formula {formula!r}: cannot parse ({exc})") from exc
    if not amounts:
        raise ValueError(f"formula {formula!r}: empty composition")
    out: dict[int, float] = {}
    for z, amount in amounts.items():
        if z > MAX_Z:
            raise ValueError(f"formula {formula!r}: element Z={z} beyond Z={MAX_Z}")
        if not amount > 0:
            raise ValueError(f"formula {formula!r}: non-positive amount of element Z={z}")
        out[z] = amount
    total = sum(out.values())
    return {z: a / total for z, a in out.items()}


def featurize_compositions(formulas: Sequence[str], max_elements: int | None = None) -> CompositionBatch:
    """Pad the compositions of ``formulas`` into a :class:`CompositionBatch`.

    Elements are stored in ascending atomic number (any order gives the same encoding).
    ``max_elements`` fixes the padded width (default: the largest composition); a formula
    with more elements raises ``ValueError``.
    """
    parsed = [parse_composition(f) for f in formulas]
    width = max((len(p) for p in parsed), default=1)
    if max_elements is not None:
        if width > max_elements:
            bad = next(f for f, p in zip(formulas, parsed) if len(p) > max_elements)
            raise ValueError(f"formula {bad!r}: more than max_elements={max_elements} elements")
        width = max_elements
    index = np.zeros((len(parsed), width), dtype=np.int64)
    frac = np.zeros((len(parsed), width), dtype=np.float32)
    for i, p in enumerate(parsed):
        for j, z in enumerate(sorted(p)):
            index[i, j] = z
            frac[i, j] = p[z]
    return CompositionBatch(torch.from_numpy(index), torch.from_numpy(frac))


def pool_elements(emb: torch.Tensor, index: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """Concatenate the fraction-weighted mean, min and max of element vectors.

    ``emb`` is ``(N, M, d)``; padded slots (``index == 0``) are ignored. Returns ``(N, 3d)``.
    """
    mask = (index > 0).unsqueeze(-1)
    w = fraction.unsqueeze(-1) * mask
    mean = (emb * w).sum(1) / w.sum(1).clamp_min(1e-12)
    big = torch.finfo(emb.dtype).max
    vmin = emb.masked_fill(~mask, big).amin(1)
    vmax = emb.masked_fill(~mask, -big).amax(1)
    return torch.cat([mean, vmin, vmax], dim=-1)


class CompositionEncoder(nn.Module):
    """Formula -> latent vector (the CroMEL "generator" / composition embedding network).

    Args:
        element_dim: width of the element embedding table.
        hidden_dim: width of the MLP hidden layer.
        latent_dim: output width (must equal the structure encoder's embedding width when
            aligned with CroMEL).
        element_init: ``"properties"`` fills the first columns of the table with
            :func:`element_property_table` (the rest small random); ``"random"`` learns it
            from scratch; ``"matscholar"``: the 200-d Matscholar embeddings matminer ships
            (CroMEL's element features; ``element_dim`` must be 200, usually frozen).
        freeze_elements: keep the element table fixed.
        stochastic: add ``softplus``-scaled Gaussian noise to the latent in training mode
            (the reparameterised generator of the CroMEL code); evaluation is deterministic.
        seed: seeds the random part of the initialisation.
        noise_bias: initial bias of the noise-scale layer (``softplus(noise_bias)`` is the
            initial noise std).
    """

    def __init__(
        self,
        element_dim: int = 32,
        hidden_dim: int = 128,
        latent_dim: int = 64,
        element_init: str = "properties",
        freeze_elements: bool = False,
        stochastic: bool = True,
        seed: int = 0,
        noise_bias: float = -4.0,
    ) -> None:
        super().__init__()
        if element_init not in ("properties", "random", "matscholar"):
            raise ValueError(f"element_init must be 'properties', 'random' or 'matscholar', got {element_init!r}")
        self.config = dict(
            element_dim=element_dim,
            hidden_dim=hidden_dim,
            latent_dim=latent_dim,
            element_init=element_init,
            freeze_elements=freeze_elements,
            stochastic=stochastic,
            seed=seed,
            noise_bias=noise_bias,
        )
        gen = torch.Generator().manual_seed(seed)
        weight = torch.randn(MAX_Z + 1, element_dim, generator=gen) * 0.1
        if element_init == "properties":
            props = torch.from_numpy(element_property_table())
            k = min(props.shape[1], element_dim)
            if k < props.shape[1]:
                log.warning("element_dim=%d < %d element properties: keeping the first %d", element_dim, props.shape[1], k)
            weight[:, :k] = props[:, :k]
        elif element_init == "matscholar":
            table = matscholar_table()
            if element_dim != table.shape[1]:
                raise ValueError(f"matscholar element embeddings are {table.shape[1]}-wide; element_dim is {element_dim}")
            weight = torch.from_numpy(table)
        weight[0] = 0.0
        self.elements = nn.Embedding(MAX_Z + 1, element_dim, padding_idx=0, _weight=weight)
        self.elements.weight.requires_grad_(not freeze_elements)
        self.mlp = nn.Sequential(
            nn.Linear(3 * element_dim, hidden_dim),
            nn.PReLU(),
            nn.Linear(hidden_dim, latent_dim),
            nn.PReLU(),
        )
        self.log_std: nn.Sequential | None = None
        if stochastic:
            self.log_std = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.Softplus())
            # start with small noise (softplus(-4) ~ 0.018): structure embeddings are unit
            # vectors, and noise of std ~0.7 per dimension would swamp them at the start
            nn.init.constant_(self.log_std[0].bias, noise_bias)

    @property
    def latent_dim(self) -> int:
        return int(self.config["latent_dim"])

    def to_config(self) -> dict[str, Any]:
        return {"name": "cromel_encoder", **self.config}

    def pooled(self, batch: CompositionBatch) -> torch.Tensor:
        """The ``(N, 3*element_dim)`` pooled composition vector (before the MLP)."""
        return pool_elements(self.elements(batch.index), batch.index, batch.fraction)

    def forward(self, batch: CompositionBatch) -> torch.Tensor:
        z = self.mlp(self.pooled(batch))
        if self.log_std is not None and self.training:
            z = z + torch.randn_like(z) * self.log_std(z)
        return z


class CompositionRegressor(nn.Module):
    """Composition encoder + a small head (Linear-LeakyReLU-Linear) predicting one target.

    Predictions are in target units: ``y = mean + std * head(encoder(x))``.
    """

    def __init__(self, encoder: CompositionEncoder, head_hidden: int = 64, y_mean: float = 0.0, y_std: float = 1.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(
            nn.Linear(encoder.latent_dim, head_hidden), nn.LeakyReLU(), nn.Linear(head_hidden, 1)
        )
        self.register_buffer("y_mean", torch.tensor(float(y_mean)))
        self.register_buffer("y_std", torch.tensor(float(y_std)))
        self.head_hidden = head_hidden

    @classmethod
    def from_kwargs(cls, encoder: dict[str, Any], head_hidden: int = 64) -> "CompositionRegressor":
        """Build from :meth:`to_config`'s kwargs; ``y_mean``/``y_std`` come with the state dict."""
        return cls(CompositionEncoder(**encoder), head_hidden=int(head_hidden))

    def to_config(self) -> dict[str, Any]:
        return {"name": "cromel_composition", "encoder": dict(self.encoder.config), "head_hidden": int(self.head_hidden)}

    def forward_scaled(self, batch: CompositionBatch) -> torch.Tensor:
        """Prediction in standardised units, shape ``(N,)``."""
        return self.head(self.encoder(batch)).squeeze(-1)

    def forward(self, batch: CompositionBatch) -> torch.Tensor:
        return self.forward_scaled(batch) * self.y_std + self.y_mean
