"""CroMEL: structure -> composition knowledge transfer, evaluated on experimental enthalpies.

Cross-modality material embedding loss (G. S. Na, npj Comput. Mater. 2025,
doi:10.1038/s41524-025-01723-1; code github.com/ngs00/CroMEL). Pipeline of :func:`run_cromel`:

1. **Source model.** A structure encoder (small CGCNN, L2-normalised embedding) plus a
   linear head is trained on a DFT target (``formation_energy_per_atom``) of Materials
   Project structures, using only the ``train`` ids of ``splits.json``.
2. **CroMEL alignment.** The composition encoder (the paper's "generator") is trained so
   that the distribution of its embeddings of the source compositions matches the
   distribution of the (now frozen) structure embeddings: a critic estimates the
   Wasserstein-1 distance (WGAN-GP: ``n_critic`` critic steps with gradient penalty per
   encoder step) and the encoder minimises it, plus ``pred_weight`` times the source
   regression loss of the frozen source head applied to its embedding.
3. **Transfer.** On experimental formation enthalpies (pymatgen's
   ``exp_compounds.json.gz``, 2,135 compounds; converted from eV/formula unit to eV/atom)
   with seeded k-fold cross-validation, the CroMEL-pretrained encoder + a new head is
   fine-tuned and compared with the identical architecture trained from scratch. Early
   stopping uses an inner validation split of each training fold only.

Reading of the method (the paper body was not available offline; the authors' code
``build_src_model.py`` / ``method/model.py`` / ``exec_tl.py`` / ``util/chem.py`` was read):

* composition vector = [fraction-weighted mean, min, max] of 200-d Matscholar element
  embeddings -> "generator" MLP (Linear-PReLU-Linear-PReLU, 64) whose output gets
  reparameterised noise ``h + eps * softplus(W h)``;
* structure encoder = CGCNN/MPNN, L2-normalised 64-d embedding, linear head trained with a
  squared loss on the source target (MP formation energy), Adam 5e-4, 300 epochs;
* in the same batch loop a 2-layer critic (RMSprop 1e-4) is updated every batch with
  ``-E[D(h_s)] + E[D(h_c)] + 10*GP`` and the generator every 5th batch with ``-E[D(h_c)]``:
  the composition embedding *distribution* is pulled onto the structure embedding
  distribution (the critic is unconditional, so pairs are not matched one to one);
* transfer: generator + Linear-LeakyReLU-Linear head, all fine-tuned with L1 loss, Adam
  5e-4 (wd 5e-6), batch 32, 1,000 epochs, 5-fold CV (seed 0), reporting R² and MAE mean ±
  std.

Deviations here (all deliberate, all configurable or cheap to revert):

* the source model is trained first and frozen, then the encoder is aligned to its
  (fixed) embeddings, instead of interleaving the three updates: the target distribution
  is then stationary and the embeddings are computed once (much cheaper on CPU);
* the gradient penalty is taken at random interpolates between structure and composition
  embeddings (Gulrajani et al. 2017), not at the generated points only; Adam(0.5, 0.9)
  instead of RMSprop; ``n_critic`` critic steps per encoder step on fresh batches;
* ``pred_weight`` adds the source regression loss of the frozen source head on the
  composition embedding (brief: "plus the source regression loss"); the reference code
  trains the generator with the Wasserstein term only -- ``pred_weight=0`` reproduces that;
* elements start from standardised pymatgen properties (no Matscholar file offline) and
  the table is learned;
* the noise of the composition encoder is off in evaluation mode (the reference samples
  it at prediction time too);
* target models stop early on an inner validation split of each training fold (the
  reference trains a fixed 1,000 epochs and has no model selection);
* the structure encoder is a compact CGCNN written here (``matfuse.models.cromel``), with
  pymatgen-property atom features, not the reference CGCNN with Matscholar features.

``CromelConfig()`` is CPU-cheap (2,000 source structures, 30 source epochs, 1,500
alignment steps, <=300 fine-tuning epochs); ``CromelConfig.paper_scale()`` approaches the
reference settings (all train entries, 300 source epochs, 1,000 fine-tuning epochs).
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from matfuse.config import CromelConfig  # noqa: F401  (re-exported)
from matfuse.evaluate import regression_metrics
from matfuse.io import atomic_path, rejects_frame, write_json, write_parquet, write_text
from matfuse.kit import fit, resolve_device, save_checkpoint, seed_everything
from matfuse.models.composition import (
    CompositionBatch,
    CompositionEncoder,
    CompositionRegressor,
    featurize_compositions,
    parse_composition,
)
from matfuse.models.cromel import (
    Critic,
    Graph,
    StructureEncoder,
    StructureRegressor,
    collate_graphs,
    critic_loss,
    generator_loss,
    empirical_wasserstein,
    structure_graph,
)

log = logging.getLogger(__name__)

STAGE = "cromel"
EXP_DATASET = "exp_formation_enthalpy"
EXP_TARGET = "formation_enthalpy"
#: metrics.csv ``dataset`` of each target set (``CromelConfig.target_sets``).
TARGET_SET_NAMES = {"exp_compounds": EXP_DATASET, "efe": "efe_intermetallics"}
MODELS = ("composition", "composition+cromel")
METRIC_COLUMNS = ["dataset", "target", "protocol", "model", "fold", "n", "mae", "rmse", "r2"]


def cromel_model_name(pred_weight: float, default: float) -> str:
    """``composition+cromel`` for the configured pred_weight, ``composition+cromel(pw=<w>)`` for extra ones."""
    return "composition+cromel" if pred_weight == default else f"composition+cromel(pw={pred_weight:g})"


def new_encoder(cfg: CromelConfig, seed: int) -> CompositionEncoder:
    """A fresh composition encoder of the configured shape (Matscholar element vectors stay fixed)."""
    return CompositionEncoder(cfg.element_dim, cfg.comp_hidden, cfg.latent_dim, cfg.element_init,
                              freeze_elements=cfg.element_init == "matscholar", stochastic=cfg.stochastic, seed=seed)


# --------------------------------------------------------------------------- helpers
def _load_structure(text: str) -> Any:
    """Structure JSON string -> pymatgen ``Structure``."""
    from matfuse.structures import load_structure

    return load_structure(text)


# --------------------------------------------------------------------------- data
def default_exp_path() -> Path:
    """The ``exp_compounds.json.gz`` shipped inside pymatgen."""
    import pymatgen.analysis.compatibility as compat

    path = Path(compat.__file__).parent / "exp_compounds.json.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: this pymatgen does not ship exp_compounds.json.gz")
    return path


def load_exp_formation_enthalpy(path: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Experimental formation enthalpies as ``(table, rejects)``.

    The file is a list of ``{"formula", "exp energy", "uncertainty", "mpid"}``; ``exp energy``
    is in eV per formula unit *as written* (pymatgen ``correction_calculator``: "formation
    energy in eV/formula unit"; e.g. Ag2O -0.322 eV = -31.1 kJ/mol), so it is divided by the
    number of atoms of the formula. Returns columns ``formula, mpid, formation_enthalpy``
    (eV/atom), ``uncertainty`` (eV/atom). Unparsable or non-finite rows go to ``rejects``
    (``material_id`` = formula); duplicate formulas keep the first and reject the rest.
    """
    from pymatgen.core import Composition

    path = Path(path) if path is not None else default_exp_path()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        records = json.load(fh)
    rows, rejects, seen = [], [], set()
    for rec in records:
        formula = str(rec.get("formula", ""))
        try:
            parse_composition(formula)
            comp = Composition(formula)
            n_atoms = comp.num_atoms
            energy = float(rec["exp energy"])
        except (ValueError, KeyError, TypeError) as exc:
            rejects.append({"material_id": formula, "stage": STAGE, "reason": f"exp data: {exc}"})
            continue
        if not math.isfinite(energy):
            rejects.append({"material_id": formula, "stage": STAGE, "reason": "exp data: non-finite energy"})
            continue
        key = comp.reduced_formula
        if key in seen:
            rejects.append({"material_id": formula, "stage": STAGE, "reason": f"exp data: duplicate of {key}"})
            continue
        seen.add(key)
        unc = rec.get("uncertainty")
        rows.append(
            {
                "formula": formula,
                "mpid": rec.get("mpid"),
                "formation_enthalpy": energy / n_atoms,
                "uncertainty": float(unc) / n_atoms if unc is not None else float("nan"),
            }
        )
    log.info("experimental enthalpies: %d compounds (%d rejected) from %s", len(rows), len(rejects), path)
    return pd.DataFrame(rows), rejects_frame(rejects)


def load_efe(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """CroMEL's own target set (``efe.xlsx`` of ngs00/CroMEL, staged as CSV): 1,196 intermetallic
    compounds, ``form_eng_exp`` in eV/atom, rows in the file's order (the authors' folds index it).

    Returns ``(table, rejects)`` like :func:`load_exp_formation_enthalpy`; rows without a value or
    with an unparsable composition are rejects (the authors' loader skips null targets too).
    """
    df = pd.read_csv(path)
    missing = [c for c in ("composition", "form_eng_exp") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; it has {list(df.columns)}")
    rows, rejects = [], []
    for formula, value in zip(df["composition"].astype(str), df["form_eng_exp"]):
        if pd.isna(value):
            rejects.append({"material_id": formula, "stage": STAGE, "reason": "efe: no form_eng_exp"})
            continue
        try:
            parse_composition(formula)
        except ValueError as exc:
            rejects.append({"material_id": formula, "stage": STAGE, "reason": f"efe: {exc}"})
            continue
        rows.append({"formula": formula, "mpid": None, "formation_enthalpy": float(value), "uncertainty": float("nan")})
    log.info("efe: %d compounds (%d rejected) from %s", len(rows), len(rejects), path)
    return pd.DataFrame(rows), rejects_frame(rejects)


def load_target_set(name: str, cfg: CromelConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One of ``CromelConfig.target_sets`` as ``(table, rejects)``."""
    if name == "efe":
        return load_efe(cfg.efe_path)
    if name == "exp_compounds":
        return load_exp_formation_enthalpy(cfg.exp_path)
    raise ValueError(f"unknown CroMEL target set {name!r} (exp_compounds, efe)")


def load_source(
    entries_path: str | Path, splits_path: str | Path, cfg: CromelConfig, seed: int
) -> tuple[pd.DataFrame, list[Graph], pd.DataFrame]:
    """Train-split source entries with their graphs: ``(table, graphs, rejects)``.

    Only ids in ``splits["train"]`` are read; a seeded subset of ``cfg.n_source`` of them is
    drawn (sorted ids, so the subset does not depend on file order). Entries without the
    source target or whose structure cannot be turned into a graph are rejected with a reason.
    The table has ``material_id, formula, y`` in the order of ``graphs``.
    """
    splits = json.loads(Path(splits_path).read_text())
    if "train" not in splits:
        raise ValueError(f"{splits_path}: no 'train' list")
    train_ids = set(map(str, splits["train"]))
    cols = ["material_id", "formula", "structure", cfg.source_target]
    entries = pd.read_parquet(entries_path)
    missing = [c for c in cols if c not in entries.columns]
    if missing:
        raise ValueError(f"{entries_path}: missing column(s) {missing}")
    entries = entries[cols].copy()
    entries["material_id"] = entries["material_id"].astype(str)
    absent = train_ids - set(entries["material_id"])
    if absent:
        log.warning("%d train ids of %s are not in %s", len(absent), splits_path, entries_path)
    entries = entries[entries["material_id"].isin(train_ids)].sort_values("material_id").reset_index(drop=True)
    rejects: list[dict[str, str]] = []
    no_y = entries[cfg.source_target].isna()
    for mid in entries.loc[no_y, "material_id"]:
        rejects.append({"material_id": mid, "stage": STAGE, "reason": f"no {cfg.source_target}"})
    entries = entries[~no_y].reset_index(drop=True)
    if cfg.n_source is not None and len(entries) > cfg.n_source:
        pick = np.sort(np.random.default_rng(seed).choice(len(entries), cfg.n_source, replace=False))
        entries = entries.iloc[pick].reset_index(drop=True)
        log.info("source: seeded subset of %d of the train entries", cfg.n_source)
    rows, graphs = [], []
    for rec in tqdm(entries.itertuples(index=False), total=len(entries), desc="cromel graphs", mininterval=5):
        mid = rec.material_id
        try:
            struct = _load_structure(rec.structure)
            graph = structure_graph(struct, cfg.cutoff, cfg.max_neighbors)
            formula = struct.composition.formula
            parse_composition(formula)
        except Exception as exc:  # any parse/graph failure is recorded, never fatal
            rejects.append({"material_id": mid, "stage": STAGE, "reason": f"structure: {exc}"})
            continue
        graphs.append(graph)
        rows.append({"material_id": mid, "formula": formula, "y": float(getattr(rec, cfg.source_target))})
    if len(graphs) < 10:
        raise ValueError(f"only {len(graphs)} usable source entries in {entries_path} (need >= 10)")
    log.info("source: %d structures with graphs, %d rejected", len(graphs), len(rejects))
    return pd.DataFrame(rows), graphs, rejects_frame(rejects)


# --------------------------------------------------------------------------- training
def _batches(n: int, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + size] for i in range(0, n, size)]


@torch.no_grad()
def embed_structures(model: StructureRegressor, graphs: Sequence[Graph], device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Structure embeddings (eval mode) of ``graphs``, shape ``(n, latent_dim)``."""
    model.eval()
    out = [model.encoder(collate_graphs([graphs[i] for i in idx]).to(device)) for idx in _batches(len(graphs), batch_size, None)]
    return torch.cat(out)


def train_structure_model(
    graphs: Sequence[Graph], y: np.ndarray, cfg: CromelConfig, seed: int, device: torch.device
) -> tuple[StructureRegressor, float, float, list[dict[str, float]]]:
    """Train the source structure model on standardised ``y`` (MSE); early stopping on a held-out part.

    Returns ``(model, y_mean, y_std, history)``; the model holds the best monitored state.
    """
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    n = len(graphs)
    perm = rng.permutation(n)
    n_val = max(1, int(round(cfg.source_val_fraction * n)))
    val_idx, fit_idx = perm[:n_val], perm[n_val:]
    y_mean, y_std = float(y[fit_idx].mean()), float(y[fit_idx].std() or 1.0)
    ys = torch.tensor((y - y_mean) / y_std, dtype=torch.float32)
    model = StructureRegressor(
        StructureEncoder(cfg.struct_hidden, cfg.struct_n_conv, cfg.latent_dim, cfg.cutoff, cfg.gaussian_step)
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.struct_lr, weight_decay=1e-6)
    val_batch = collate_graphs([graphs[i] for i in val_idx]).to(device)

    def batches() -> list[np.ndarray]:
        return [fit_idx[idx] for idx in _batches(len(fit_idx), cfg.batch_size, rng)]

    def loss_of(idx: np.ndarray) -> tuple[torch.Tensor, int] | None:
        if len(idx) < 2:  # BatchNorm needs two samples
            return None
        pred = model(collate_graphs([graphs[i] for i in idx]).to(device))
        return nn.functional.mse_loss(pred, ys[idx].to(device)), len(idx)

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            return float((model(val_batch).cpu() - ys[val_idx]).abs().mean()) * y_std

    result = fit(model, opt, epochs=cfg.struct_epochs, patience=cfg.struct_patience, batches=batches,
                 loss_of=loss_of, validate=validate, desc="cromel source", keep_initial=True)
    model.eval()
    history = result.history
    return model, y_mean, y_std, history


def align_composition_encoder(
    encoder: CompositionEncoder,
    comps: CompositionBatch,
    struct_emb: torch.Tensor,
    cfg: CromelConfig,
    seed: int,
    device: torch.device,
    head: nn.Module | None = None,
    y_scaled: torch.Tensor | None = None,
    n_checks: int = 10,
) -> tuple[Critic, list[dict[str, float]]]:
    """CroMEL alignment of ``encoder`` (in place) to the frozen ``struct_emb`` distribution.

    Each step: ``cfg.n_critic`` critic updates (WGAN-GP loss on a random batch of paired
    rows), then one encoder update minimising ``-E[D(encoder(c))]`` plus
    ``cfg.pred_weight * MSE(head(encoder(c)), y_scaled)`` when ``head`` is given (the head is
    not updated). History rows (every ``align_steps / n_checks`` steps) hold the running means
    of critic loss, Wasserstein estimate and losses, and ``w_exact``, the exact empirical
    Wasserstein-1 distance (optimal matching, :func:`empirical_wasserstein`) between the
    structure embeddings and the (eval-mode) composition embeddings of the source set.
    """
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    n = len(comps)
    encoder.to(device)
    critic = Critic(cfg.latent_dim, cfg.critic_hidden).to(device)
    opt_c = torch.optim.Adam(critic.parameters(), lr=cfg.align_lr, betas=(0.5, 0.9))
    opt_g = torch.optim.Adam([p for p in encoder.parameters() if p.requires_grad], lr=cfg.align_lr, betas=(0.5, 0.9))
    comps = comps.to(device)
    struct_emb = struct_emb.to(device)
    use_pred = head is not None and y_scaled is not None and cfg.pred_weight > 0
    if use_pred:
        assert head is not None and y_scaled is not None
        head = head.to(device).eval()
        for p in head.parameters():
            p.requires_grad_(False)
        y_scaled = y_scaled.to(device)
    bs = min(cfg.batch_size, n)

    def sw_now() -> float:
        encoder.eval()
        with torch.no_grad():
            fake = encoder(comps).cpu().numpy()
        encoder.train()
        return empirical_wasserstein(struct_emb.cpu().numpy(), fake, seed=seed)

    every = max(1, cfg.align_steps // n_checks)
    history = [{"step": 0, "critic_loss": float("nan"), "w_estimate": float("nan"), "gen_loss": float("nan"),
                "pred_loss": float("nan"), "w_exact": sw_now()}]
    acc = {"critic_loss": 0.0, "w_estimate": 0.0, "gen_loss": 0.0, "pred_loss": 0.0}
    n_acc = 0
    encoder.train()
    for step in tqdm(range(1, cfg.align_steps + 1), desc="cromel align", mininterval=5):
        for _ in range(cfg.n_critic):
            idx = torch.from_numpy(rng.choice(n, bs, replace=False)).to(device)
            with torch.no_grad():
                fake = encoder(comps[idx])
            loss_c, w_est = critic_loss(critic, struct_emb[idx], fake, cfg.gp_weight)
            opt_c.zero_grad()
            loss_c.backward()
            opt_c.step()
        idx = torch.from_numpy(rng.choice(n, bs, replace=False)).to(device)
        fake = encoder(comps[idx])
        loss_g = generator_loss(critic, fake)
        loss = loss_g
        loss_p = torch.zeros(())
        if use_pred:
            loss_p = nn.functional.mse_loss(head(fake).squeeze(-1), y_scaled[idx])  # type: ignore[index,misc]
            loss = loss + cfg.pred_weight * loss_p
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        critic.zero_grad(set_to_none=True)
        acc["critic_loss"] += loss_c.item()
        acc["w_estimate"] += w_est.item()
        acc["gen_loss"] += loss_g.item()
        acc["pred_loss"] += loss_p.item()
        n_acc += 1
        if step % every == 0 or step == cfg.align_steps:
            row = {"step": step, **{k: v / n_acc for k, v in acc.items()}, "w_exact": sw_now()}
            history.append(row)
            log.info("align step %d: %s", step, {k: round(v, 4) for k, v in row.items()})
            acc = {k: 0.0 for k in acc}
            n_acc = 0
    encoder.eval()
    return critic, history


def finetune_composition_model(
    model: CompositionRegressor,
    x_train: CompositionBatch,
    y_train: np.ndarray,
    x_val: CompositionBatch,
    y_val: np.ndarray,
    cfg: CromelConfig,
    seed: int,
    device: torch.device,
) -> tuple[CompositionRegressor, dict[str, float]]:
    """Train all parameters of ``model`` with L1 loss; keep the state with the best validation MAE."""
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.finetune_lr, weight_decay=cfg.finetune_weight_decay)
    y_mean, y_std = float(model.y_mean), float(model.y_std)
    yt = torch.tensor((y_train - y_mean) / y_std, dtype=torch.float32, device=device)
    x_train, x_val = x_train.to(device), x_val.to(device)
    yv = torch.tensor(y_val, dtype=torch.float32, device=device)

    def batches() -> list[torch.Tensor]:
        return [torch.from_numpy(idx).to(device) for idx in _batches(len(x_train), cfg.finetune_batch_size, rng)]

    def loss_of(idx_t: torch.Tensor) -> tuple[torch.Tensor, int]:
        return nn.functional.l1_loss(model.forward_scaled(x_train[idx_t]), yt[idx_t]), len(idx_t)

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            return float((model(x_val) - yv).abs().mean())

    result = fit(model, opt, epochs=cfg.finetune_epochs, patience=cfg.patience, batches=batches,
                 loss_of=loss_of, validate=validate, desc="cromel fine-tune", keep_initial=True)
    model.eval()
    return model, {"best_epoch": float(result.best_epoch), "val_mae": result.best_val_mae, "epochs_run": float(result.epochs_run)}


def make_folds(n: int, n_folds: int, seed: int, protocol: str = "leakfree") -> list[np.ndarray]:
    """Seeded k-fold test indices (disjoint, covering ``range(n)``; sizes differ by at most one).

    ``authors``: the folds of the released ``exec_tl.py`` (``numpy.random.seed(seed)``, then
    ``array_split(numpy.random.permutation(n), n_folds)``); ``leakfree``: numpy's default_rng.
    """
    if n < n_folds:
        raise ValueError(f"{n} samples cannot be split into {n_folds} folds")
    perm = np.random.RandomState(seed).permutation(n) if protocol == "authors" else np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(perm, n_folds)]


def cross_validate(
    table: pd.DataFrame,
    pretrained: CompositionEncoder | dict[str, CompositionEncoder] | None,
    cfg: CromelConfig,
    seed: int,
    device: torch.device,
    out_dir: Path | None = None,
    protocol: str = "leakfree",
    dataset: str = EXP_DATASET,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """k-fold CV on ``table`` (``formula``, ``formation_enthalpy``) of the scratch and CroMEL models.

    ``pretrained``: one aligned encoder (model ``composition+cromel``) or ``{model name: encoder}``.
    For each fold an inner validation split of the training part (seeded) drives early
    stopping; every model sees exactly the same splits and head initialisation seed.
    ``protocol="leakfree"`` fine-tunes a fresh copy of each pretrained encoder per fold;
    ``"authors"`` uses the released script's folds and fine-tunes *one* copy fold after fold (its
    later folds start from weights that were fine-tuned on their own test compounds), to measure
    what that costs. Returns ``(metrics, predictions, folds)``; ``folds`` lists test and
    inner-validation formulas. With ``out_dir`` the fine-tuned checkpoints go to ``out_dir/checkpoints/``.
    """
    if protocol not in ("leakfree", "authors"):
        raise ValueError(f"unknown CV protocol {protocol!r} (leakfree, authors)")
    if pretrained is None:
        pretrained = {}
    elif isinstance(pretrained, CompositionEncoder):
        pretrained = {"composition+cromel": pretrained}
    formulas = table["formula"].tolist()
    y = table["formation_enthalpy"].to_numpy(dtype=np.float64)
    x_all = featurize_compositions(formulas)
    folds = make_folds(len(table), cfg.n_folds, seed, protocol)
    models = ["composition", *pretrained]
    carried = {name: copy.deepcopy(enc) for name, enc in pretrained.items()}  # authors: one object across folds
    rows, preds = [], []
    fold_record: dict[str, Any] = {"seed": seed, "n_folds": cfg.n_folds, "n": len(table), "protocol": protocol,
                                   "test": {}, "inner_val": {}}
    for k, test_idx in enumerate(folds):
        rest = np.setdiff1d(np.arange(len(table)), test_idx)
        rng = np.random.default_rng([seed, k])
        rest = rng.permutation(rest)
        n_val = max(1, int(round(cfg.inner_val_fraction * len(rest))))
        val_idx, tr_idx = np.sort(rest[:n_val]), np.sort(rest[n_val:])
        fold_record["test"][str(k)] = [formulas[i] for i in test_idx]
        fold_record["inner_val"][str(k)] = [formulas[i] for i in val_idx]
        y_mean, y_std = float(y[tr_idx].mean()), float(y[tr_idx].std() or 1.0)
        for name in models:
            t0 = time.time()
            seed_everything(seed * 1000 + k)  # same initialisation whatever ran before
            if name == "composition":
                enc = new_encoder(cfg, seed)
            elif protocol == "authors":
                enc = carried[name]  # the same object every fold (fine-tuned in place)
            else:
                enc = copy.deepcopy(pretrained[name])
            seed_everything(seed * 1000 + k + 1)  # same head init for both models
            model = CompositionRegressor(enc, cfg.head_hidden, y_mean, y_std)
            model, info = finetune_composition_model(
                model, x_all[torch.from_numpy(tr_idx)], y[tr_idx], x_all[torch.from_numpy(val_idx)], y[val_idx],
                cfg, seed * 1000 + k, device,
            )
            with torch.no_grad():
                pred = model(x_all[torch.from_numpy(test_idx)].to(device)).cpu().numpy().astype(np.float64)
            met = regression_metrics(y[test_idx], pred)
            rows.append({"dataset": dataset, "target": EXP_TARGET, "protocol": protocol, "model": name, "fold": k,
                         "n": len(test_idx), **met})
            preds.append(pd.DataFrame({"dataset": dataset, "protocol": protocol, "formula": [formulas[i] for i in test_idx],
                                       "fold": k, "model": name, "y_true": y[test_idx], "y_pred": pred}))
            log.info("fold %d %s: MAE %.4f R2 %.4f (best epoch %d, %.1fs)", k, name, met["mae"], met["r2"],
                     info["best_epoch"], time.time() - t0)
            if out_dir is not None:
                plain = (dataset, protocol) == (EXP_DATASET, "leakfree")  # the names of earlier runs
                tag = re.sub(r"[^A-Za-z0-9_.=-]", "_", name if plain else f"{dataset}_{protocol}_{name}")
                save_checkpoint(out_dir / "checkpoints" / f"{tag}_fold{k}.pt", model,
                                metadata={"fold": k, "model": name, "seed": seed, "protocol": protocol, "dataset": dataset})
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    return metrics, pd.concat(preds, ignore_index=True), fold_record


def summarize(metrics: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Mean and (population) standard deviation over folds of MAE, RMSE and R², per model
    (keys ``model``, or ``dataset/protocol/model`` when there are several target sets or protocols)."""
    out: dict[str, dict[str, float]] = {}
    plain = metrics[["dataset", "protocol"]].drop_duplicates().shape[0] == 1
    for (ds, protocol, name), grp in metrics.groupby(["dataset", "protocol", "model"], sort=False):
        key = str(name) if plain else f"{ds}/{protocol}/{name}"
        out[key] = {f"{m}_{s}": float(getattr(grp[m], s)(ddof=0) if s == "std" else grp[m].mean())
                          for m in ("mae", "rmse", "r2") for s in ("mean", "std")}
    return out


# --------------------------------------------------------------------------- stage
def pretrain_cromel(
    source: pd.DataFrame, graphs: Sequence[Graph], cfg: CromelConfig, seed: int, device: torch.device
) -> tuple[StructureRegressor, dict[str, CompositionEncoder], dict[str, Any]]:
    """Source model + CroMEL alignment; returns the structure model, ``{model name: aligned encoder}``
    (one per pred_weight: the configured one and ``extra_pred_weights``) and a record."""
    y = source["y"].to_numpy(dtype=np.float64)
    t0 = time.time()
    smodel, y_mean, y_std, s_hist = train_structure_model(graphs, y, cfg, seed, device)
    t_struct = time.time() - t0
    emb = embed_structures(smodel, graphs, device)
    comps = featurize_compositions(source["formula"].tolist())
    t0 = time.time()
    encoders, histories = {}, {}
    for w in [cfg.pred_weight, *[w for w in cfg.extra_pred_weights if w != cfg.pred_weight]]:
        enc = new_encoder(cfg, seed)
        _, a_hist = align_composition_encoder(
            enc, comps, emb, cfg.model_copy(update={"pred_weight": w}), seed, device, head=smodel.head,
            y_scaled=torch.tensor((y - y_mean) / y_std, dtype=torch.float32),
        )
        name = cromel_model_name(w, cfg.pred_weight)
        encoders[name], histories[name] = enc.cpu(), a_hist
    record = {
        "source_n": len(graphs), "source_y_mean": y_mean, "source_y_std": y_std,
        "source_best_val_mae": min(h["val_mae"] for h in s_hist), "source_history": s_hist,
        "align_history": histories["composition+cromel"], "align_histories": histories,
        "time_source_s": t_struct, "time_align_s": time.time() - t0,
    }
    return smodel, encoders, record


def run_cromel(
    entries_path: str | Path, splits_path: str | Path, out_dir: str | Path, cfg: CromelConfig, seed: int = 0
) -> pd.DataFrame:
    """Run the whole CroMEL experiment; return (and write) the per-fold metric rows.

    Writes to ``out_dir``: ``metrics.csv`` (``dataset, target, model, fold, n, mae, rmse, r2``
    for models ``composition`` and ``composition+cromel``), ``summary.json`` (mean ± std over
    folds, settings, source and alignment histories, timings), ``folds.json``,
    ``predictions.parquet``, ``rejects.parquet`` and ``checkpoints/*.pt`` (the kit's one format:
    :func:`matfuse.kit.load_checkpoint`, ``weights_only=True``).
    """
    out = Path(out_dir)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    t_start = time.time()
    source, graphs, rej_src = load_source(entries_path, splits_path, cfg, seed)
    sets = {name: load_target_set(name, cfg) for name in cfg.target_sets}
    smodel, encoders, record = pretrain_cromel(source, graphs, cfg, seed, device)
    save_checkpoint(out / "checkpoints" / "structure_model.pt", smodel.cpu(),
                    {"mean": record["source_y_mean"], "std": record["source_y_std"]},
                    {"target": cfg.source_target, "seed": seed})
    for name, enc in encoders.items():
        tag = "composition_cromel" if name == "composition+cromel" else re.sub(r"[^A-Za-z0-9_.=-]", "_", name)
        save_checkpoint(out / "checkpoints" / f"{tag}.pt", enc, metadata={"seed": seed, "model": name})
    t0 = time.time()
    all_metrics, all_preds, folds = [], [], {}
    for set_name, (table, _) in sets.items():
        for protocol in cfg.protocols:
            ds = TARGET_SET_NAMES[set_name]
            m, p, f = cross_validate(table, encoders, cfg, seed, device, out, protocol, ds)
            all_metrics.append(m)
            all_preds.append(p)
            folds[f"{ds}/{protocol}"] = f
    metrics = pd.concat(all_metrics, ignore_index=True)
    preds = pd.concat(all_preds, ignore_index=True)
    if list(folds) == [f"{EXP_DATASET}/leakfree"]:
        folds = folds[f"{EXP_DATASET}/leakfree"]  # the one-set layout of earlier runs
    rej_exp = pd.concat([r for _, r in sets.values()], ignore_index=True)
    record["time_cv_s"] = time.time() - t0
    record["time_total_s"] = time.time() - t_start
    first = TARGET_SET_NAMES[cfg.target_sets[0]]
    summary = {
        "dataset": first if len(sets) == 1 else "+".join(TARGET_SET_NAMES[n] for n in sets), "target": EXP_TARGET,
        "units": "eV/atom", "seed": seed,
        "n_compounds": len(next(iter(sets.values()))[0]) if len(sets) == 1 else {TARGET_SET_NAMES[n]: len(t) for n, (t, _) in sets.items()},
        "protocols": list(cfg.protocols), "config": cfg.model_dump(), "results": summarize(metrics),
        "source_ids": sorted(source["material_id"].tolist()), **record,
    }
    with atomic_path(out / "metrics.csv") as tmp:
        metrics.to_csv(tmp, index=False)
    write_json(summary, out / "summary.json")
    write_json(folds, out / "folds.json")
    write_parquet(preds, out / "predictions.parquet")
    write_parquet(pd.concat([rej_src, rej_exp], ignore_index=True), out / "rejects.parquet")
    write_text(format_summary(summary), out / "summary.txt")
    log.info("cromel done in %.1fs:\n%s", record["time_total_s"], format_summary(summary))
    return metrics


def format_summary(summary: dict[str, Any]) -> str:
    """One line per model: MAE and R² mean ± std over folds."""
    lines = [f"{summary['dataset']} ({summary['n_compounds']} compounds, {summary['config']['n_folds']}-fold CV, eV/atom)"]
    for name, r in summary["results"].items():
        lines.append(f"{name:20s} MAE {r['mae_mean']:.4f} ± {r['mae_std']:.4f}   R2 {r['r2_mean']:.4f} ± {r['r2_std']:.4f}")
    return "\n".join(lines) + "\n"
