"""Stage functions of the generation branch (``workflow/rules/generate.smk``; thin scripts call these).

Data: the split tables of the configured dataset (``results/generation/data/{train,val,test}.parquet``,
crystals with at most ``max_sites`` sites). The test table is read only by the ``test`` row and by
the metrics; no generative training step (LM, pairs, RFM, simple-base fit, pyxtal compositions)
reads it.

1. :func:`train_lm_stage`: the crystal-text LM on the training split (selection on validation loss).
2. :func:`sample_lm_stage`: ``n_samples`` unconditional LM samples (the ``lm`` row).
3. :func:`sample_pairs_stage`: formula-conditioned LM samples of ``n_pair_targets`` training crystals;
   a sample whose species match its target is a (base, data) pair; the pair yield is reported.
4. :func:`train_rfm_stage`: the flow from base ``lm`` (the pairs) or ``simple`` (FlowMM's base)
   — the same targets, network and epochs.
5. :func:`integrate_stage`: ``flowllm`` = the RFM moving every parsed LM sample of stage 2;
   ``rfm_simple`` = the RFM from simple-base draws with the same compositions.
6. :func:`pyxtal_stage` (training compositions) and :func:`test_stage` (the test split).
7. :func:`table_stage`: ``metrics.csv`` (long format), the markdown table, E_hull histograms.

Every samples file has ``sample_id``, ``structure`` (pymatgen JSON, null where there is none),
``reason`` (why there is none), and per method ``formula`` / ``text`` where known.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from matfuse.config import GenerationConfig
from matfuse.io import write_json, write_parquet, write_text
from matfuse.structures import dump_structure, load_structure

log = logging.getLogger(__name__)


def _threads(cfg: GenerationConfig) -> None:
    import torch

    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)


def read_split_structures(path: str | Path, n: int | None = None, seed: int = 0) -> tuple[list[str], list[Any]]:
    """(ids, Structures) of a split table, optionally a seeded subset of ``n`` (table order kept)."""
    df = pd.read_parquet(path, columns=["material_id", "structure"])
    if n is not None and n < len(df):
        keep = np.sort(np.random.default_rng(seed).choice(len(df), size=n, replace=False))
        df = df.iloc[keep]
    return df["material_id"].astype(str).tolist(), [load_structure(s) for s in df["structure"]]


def split_tables(entries_path: str | Path, splits_path: str | Path, max_sites: int, out_dir: str | Path) -> dict[str, int]:
    """``out_dir/{train,val,test}.parquet``: the entries of each split with at most ``max_sites`` sites."""
    from matfuse.generate.evaluate import split_table

    counts = {}
    for split in ("train", "val", "test"):
        counts[split] = len(split_table(entries_path, splits_path, split, Path(out_dir) / f"{split}.parquet", max_sites))
    log.info("split tables: %s", counts)
    return counts


# --------------------------------------------------------------------------- LM
def _lm_settings(cfg: GenerationConfig):
    from matfuse.generate.lm import LMSettings

    c = cfg.lm
    return LMSettings(
        n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head, n_positions=c.n_positions, dropout=c.dropout,
        epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, weight_decay=c.weight_decay, warmup=c.warmup,
        patience=c.patience, cond_fraction=c.cond_fraction, augment=c.augment, length_decimals=c.length_decimals,
        angle_decimals=c.angle_decimals, coord_decimals=c.coord_decimals, max_sites=cfg.max_sites, device=cfg.device,
    )


def train_lm_stage(train_path: str | Path, val_path: str | Path, cfg: GenerationConfig, model_path: str | Path,
                   summary_path: str | Path) -> dict[str, Any]:
    """Train the LM on the training split (validation split for selection); checkpoint + summary JSON."""
    from matfuse import kit
    from matfuse.generate.lm import train_lm

    _threads(cfg)
    t0 = time.perf_counter()
    _, train = read_split_structures(train_path, cfg.lm.n_train, cfg.seed)
    _, val = read_split_structures(val_path, cfg.lm.n_val, cfg.seed + 1)
    model, summary = train_lm(train, val, _lm_settings(cfg), seed=cfg.seed)
    kit.save_checkpoint(model_path, model, metadata={"stage": "train_lm", "n_train": len(train), "seed": cfg.seed})
    summary["stage_seconds"] = time.perf_counter() - t0
    write_json(summary, summary_path)
    log.info("LM: %d parameters, best val loss %.4f at epoch %d, %.0f tokens/s, %.0f s", summary["n_parameters"],
             summary["best_val_loss"], summary["best_epoch"], summary["tokens_per_second"], summary["stage_seconds"])
    return summary


def _load_lm(model_path: str | Path, cfg: GenerationConfig):
    from matfuse import kit

    model, _ = kit.load_checkpoint(model_path, kit.resolve_device(cfg.device))
    return model


def _failure_counts(reasons: Sequence[str | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reasons:
        if r:
            key = str(r).split(":")[0]
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _formula_text(formula: Sequence[tuple[str, int]] | None) -> str | None:
    return None if formula is None else "".join(f"{el}{n}" for el, n in formula)


def sample_lm_stage(model_path: str | Path, cfg: GenerationConfig, out_path: str | Path,
                    summary_path: str | Path) -> dict[str, Any]:
    """``n_samples`` unconditional LM samples (the ``lm`` row), each parsed or with its parse failure."""
    from matfuse.generate.lm import parse_rate, sample_crystals
    from matfuse.generate.text import cell_formula

    _threads(cfg)
    t0 = time.perf_counter()
    model = _load_lm(model_path, cfg)
    s = cfg.sampling
    samples = sample_crystals(model, n=cfg.n_samples, temperature=s.temperature, top_p=s.top_p,
                              batch_size=s.batch_size, seed=cfg.seed)
    rows = [{"sample_id": f"lm-{k:05d}", "structure": dump_structure(x.structure) if x.structure is not None else None,
             "reason": None if x.structure is not None else f"parse: {x.error}",
             "formula": _formula_text(cell_formula(x.structure)) if x.structure is not None else None,
             "n_tokens": x.n_tokens, "text": x.text} for k, x in enumerate(samples)]
    write_parquet(pd.DataFrame(rows), out_path)
    summary = {"n_samples": len(samples), "parse_rate": parse_rate(samples),
               "parse_failures": _failure_counts([x.error for x in samples]),
               "mean_tokens": float(np.mean([x.n_tokens for x in samples])), "sampling": s.model_dump(),
               "stage_seconds": time.perf_counter() - t0}
    write_json(summary, summary_path)
    log.info("LM samples: %d, parse rate %.3f, failures %s, %.0f s", len(samples), summary["parse_rate"],
             summary["parse_failures"], summary["stage_seconds"])
    return summary


def sample_pairs_stage(model_path: str | Path, train_path: str | Path, cfg: GenerationConfig, out_path: str | Path,
                       summary_path: str | Path) -> dict[str, Any]:
    """Formula-conditioned LM samples of training crystals (RFM training pairs) and the pair yield.

    ``n_pair_targets`` training crystals (seeded), ``samples_per_target`` samples each; a sample is
    a pair when it parses with exactly its prompt's species (the parse checks the prompt).
    """
    from matfuse.generate.lm import sample_crystals
    from matfuse.generate.text import cell_formula

    _threads(cfg)
    t0 = time.perf_counter()
    model = _load_lm(model_path, cfg)
    ids, structures = read_split_structures(train_path, cfg.rfm.n_pair_targets, cfg.seed + 2)
    k = cfg.rfm.samples_per_target
    formulas = [cell_formula(s) for s in structures for _ in range(k)]
    targets = [i for i in ids for _ in range(k)]
    s = cfg.sampling
    samples = sample_crystals(model, formulas=formulas, temperature=s.temperature, top_p=s.top_p,
                              batch_size=s.batch_size, seed=cfg.seed + 3,
                              constrain=cfg.rfm.pair_sampling == "constrained")
    rows = [{"target_id": t, "sample": j % k, "formula": _formula_text(f),
             "structure": dump_structure(x.structure) if x.structure is not None else None,
             "reason": x.error, "paired": x.structure is not None}
            for j, (t, f, x) in enumerate(zip(targets, formulas, samples))]
    df = pd.DataFrame(rows)
    write_parquet(df, out_path)
    n_targets_paired = int(df.groupby("target_id")["paired"].any().sum())
    summary = {"n_targets": len(ids), "samples_per_target": k, "pair_sampling": cfg.rfm.pair_sampling,
               "n_samples": len(df), "n_pairs": int(df["paired"].sum()),
               "pair_yield": float(df["paired"].mean()) if len(df) else math.nan,
               "targets_with_a_pair": n_targets_paired,
               "failures": _failure_counts(df["reason"].tolist()), "stage_seconds": time.perf_counter() - t0}
    write_json(summary, summary_path)
    log.info("pairs: %d of %d formula-conditioned samples match their species (yield %.3f), %d of %d targets, %.0f s",
             summary["n_pairs"], len(df), summary["pair_yield"], n_targets_paired, len(ids), summary["stage_seconds"])
    return summary


# --------------------------------------------------------------------------- RFM
def _rfm_settings(cfg: GenerationConfig):
    from matfuse.generate.rfm import RFMSettings

    c = cfg.rfm
    return RFMSettings(hidden=c.hidden, n_layers=c.n_layers, n_freq=c.n_freq, time_dim=c.time_dim, epochs=c.epochs,
                       batch_size=c.batch_size, lr=c.lr, weight_decay=c.weight_decay, warmup=c.warmup,
                       lattice_weight=c.lattice_weight, val_fraction=c.val_fraction, patience=c.patience,
                       device=cfg.device)


def rfm_training_set(pairs_path: str | Path, train_path: str | Path) -> tuple[list[str], list[Any], list[list[Any]]]:
    """(target ids, target Crystals, matched LM base Crystals per target) of the paired targets."""
    from matfuse.generate.rfm import Crystal, match_atoms
    from matfuse.generate.text import reduce_cell

    pairs = pd.read_parquet(pairs_path)
    pairs = pairs[pairs["paired"]]
    train = pd.read_parquet(train_path, columns=["material_id", "structure"]).set_index("material_id")
    ids, targets, bases = [], [], []
    for tid, group in pairs.groupby("target_id", sort=True):
        data = Crystal.from_structure(reduce_cell(load_structure(train.loc[tid, "structure"])))
        matched = [match_atoms(Crystal.from_structure(load_structure(s)), data) for s in group["structure"]]
        matched = [m for m in matched if m is not None]
        if matched:
            ids.append(str(tid))
            targets.append(data)
            bases.append(matched)
    return ids, targets, bases


def train_rfm_stage(pairs_path: str | Path, train_path: str | Path, base: str, cfg: GenerationConfig,
                    model_path: str | Path, summary_path: str | Path) -> dict[str, Any]:
    """The flow from base ``lm`` or ``simple`` on the paired training crystals (the same targets for both)."""
    from matfuse import kit
    from matfuse.generate.rfm import SimpleBase, train_rfm

    _threads(cfg)
    t0 = time.perf_counter()
    ids, targets, bases = rfm_training_set(pairs_path, train_path)
    if len(targets) < 2:
        raise ValueError(f"{pairs_path}: only {len(targets)} training crystals have a matched LM sample; the RFM needs "
                         "more (train the LM longer, or raise generation.rfm.n_pair_targets / samples_per_target)")
    simple = SimpleBase.fit(targets)
    model, summary = train_rfm(targets, base, _rfm_settings(cfg), lm_bases=bases if base == "lm" else None,
                               simple=simple, seed=cfg.seed)
    kit.save_checkpoint(model_path, model, metadata={"stage": "train_rfm", "base": base, "n_targets": len(targets),
                                                     "simple_base": simple.to_dict(), "seed": cfg.seed})
    summary["stage_seconds"] = time.perf_counter() - t0
    write_json(summary, summary_path)
    log.info("RFM (%s base): %d targets, best val loss %.4f at epoch %d, %.0f s", base, len(targets),
             summary["best_val_loss"], summary["best_epoch"], summary["stage_seconds"])
    return summary


def integrate_stage(model_path: str | Path, lm_samples_path: str | Path, base: str, cfg: GenerationConfig,
                    out_path: str | Path, summary_path: str | Path) -> dict[str, Any]:
    """``flowllm`` (base ``lm``): every LM sample moved by the flow (LM parse failures stay failures,
    so rates are per LM sample drawn); ``rfm_simple`` (base ``simple``): one simple-base draw per
    parsed LM sample, with its composition, moved by the flow."""
    from matfuse import kit
    from matfuse.generate.rfm import Crystal, SimpleBase, integrate

    _threads(cfg)
    t0 = time.perf_counter()
    model, ckpt = kit.load_checkpoint(model_path, kit.resolve_device(cfg.device))
    lm = pd.read_parquet(lm_samples_path)
    parsed = lm[lm["structure"].notna()].reset_index(drop=True)
    rng = np.random.default_rng(cfg.seed + 4)
    lm_crystals = [Crystal.from_structure(load_structure(s)) for s in parsed["structure"]]
    if base == "lm":
        starts, method = lm_crystals, "flowllm"
    elif base == "simple":
        simple = SimpleBase(**ckpt["metadata"]["simple_base"])
        starts, method = [simple.sample(c.z, rng) for c in lm_crystals], "rfm_simple"
    else:
        raise ValueError(f"unknown base {base!r} (lm, simple)")
    moved = integrate(model, starts, steps=cfg.rfm.steps, batch_size=cfg.sampling.batch_size) if starts else []
    by_id: dict[str, dict[str, Any]] = {}
    for sid, crystal in zip(parsed["sample_id"], moved):
        try:
            s = crystal.to_structure()
            ok = bool(np.isfinite(s.lattice.volume)) and s.lattice.volume > 0
            reason = None if ok else f"integration: cell volume {s.lattice.volume}"
        except Exception as exc:  # an impossible angle triple after clipping
            s, reason = None, f"integration: invalid lattice ({type(exc).__name__}: {exc})"
        by_id[sid] = {"structure": dump_structure(s) if s is not None and reason is None else None, "reason": reason}
    rows = []
    for sid, reason in zip(lm["sample_id"], lm["reason"]):
        new_id = sid.replace("lm-", f"{method}-", 1)
        if sid in by_id:
            rows.append({"sample_id": new_id, **by_id[sid], "base_sample": sid})
        elif base == "lm":
            rows.append({"sample_id": new_id, "structure": None, "reason": reason, "base_sample": sid})
    df = pd.DataFrame(rows, columns=["sample_id", "structure", "reason", "base_sample"])
    write_parquet(df, out_path)
    summary = {"method": method, "base": base, "steps": cfg.rfm.steps, "n_samples": len(df),
               "n_structures": int(df["structure"].notna().sum()), "stage_seconds": time.perf_counter() - t0}
    write_json(summary, summary_path)
    log.info("%s: %d samples (%d structures) with %d Euler steps, %.0f s", method, len(df), summary["n_structures"],
             cfg.rfm.steps, summary["stage_seconds"])
    return summary


# --------------------------------------------------------------------------- baselines
def pyxtal_stage(train_path: str | Path, cfg: GenerationConfig, out_path: str | Path) -> pd.DataFrame:
    """Random symmetric crystals (pyxtal) for ``n_samples`` seeded training-split cell compositions."""
    from pymatgen.core import Composition

    from matfuse.generate.baselines import write_pyxtal_samples

    df = pd.read_parquet(train_path, columns=["material_id", "structure"])
    idx = np.random.default_rng(cfg.seed + 5).choice(len(df), size=min(cfg.n_samples, len(df)), replace=False)
    comps = [Composition(load_structure(df["structure"].iloc[i]).composition.get_el_amt_dict()) for i in np.sort(idx)]
    return write_pyxtal_samples(comps, out_path, seed=cfg.seed, max_groups=cfg.pyxtal_max_groups)


def test_stage(test_path: str | Path, cfg: GenerationConfig, out_path: str | Path) -> pd.DataFrame:
    """The test split itself as a samples file (``n_samples`` seeded crystals): the ceiling row."""
    from matfuse.generate.evaluate import samples_from_entries

    df = samples_from_entries(test_path, n=cfg.n_samples, seed=cfg.seed)
    write_parquet(df, out_path)
    return df


def calibration_subset(path: str | Path, n: int, seed: int, out_path: str | Path) -> pd.DataFrame:
    """A seeded subset of ``n`` rows of the calibration table (``material_id``, ``cif``, ``e_above_hull``)."""
    raw = pd.read_csv(path)
    missing = {"material_id", "cif", "e_above_hull"} - set(raw.columns)
    if missing:
        raise ValueError(f"{path}: calibration table lacks columns {sorted(missing)}")
    raw = raw[["material_id", "cif", "e_above_hull"]]
    if n < len(raw):
        raw = raw.sample(n=n, random_state=seed).reset_index(drop=True)
    write_parquet(raw, out_path)
    return raw


# --------------------------------------------------------------------------- table
METRIC_GROUPS = ("rates", "coverage", "wasserstein")


def metrics_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Long-format rows (method, metric, value, lo, hi, count, n) of one evaluation summary."""
    rows = []
    method = summary["method"]
    for name, r in summary.get("rates", {}).items():
        rows.append({"method": method, "metric": name, "value": r.get("rate"), "lo": r.get("lo"), "hi": r.get("hi"),
                     "count": r.get("count"), "n": r.get("n")})
    for group in ("coverage", "wasserstein"):
        for name, v in (summary.get(group) or {}).items():
            if isinstance(v, (int, float)) or v is None:
                rows.append({"method": method, "metric": name, "value": v, "lo": None, "hi": None, "count": None,
                             "n": summary.get("n_drawn")})
    for col, st in (summary.get("e_hull") or {}).items():
        rows.append({"method": method, "metric": f"median_{col}", "value": st.get("median"), "lo": st.get("q10"),
                     "hi": st.get("q90"), "count": None, "n": st.get("n")})
    return rows


def table_stage(
    summaries: dict[str, str | Path],
    eval_samples: dict[str, str | Path],
    stage_summaries: dict[str, str | Path],
    out_csv: str | Path,
    out_md: str | Path,
    hist_chgnet: str | Path,
    hist_model: str | Path,
    calibration: str | Path | None = None,
    n_examples: int = 5,
) -> pd.DataFrame:
    """``metrics.csv`` + the markdown table (methods × metrics, the calibration row, the published
    figures, wall time per stage, a few generated crystals with predicted properties) + histograms."""
    from matfuse.generate.evaluate import plot_ehull_histograms, summary_table

    loaded = {m: json.loads(Path(p).read_text()) for m, p in summaries.items()}
    rows = [r for s in loaded.values() for r in metrics_rows(s)]
    cal = json.loads(Path(calibration).read_text()) if calibration is not None else None
    if cal is not None:
        cal_rows = metrics_rows({**cal, "method": "calibration"})
        rows += [r for r in cal_rows if r["metric"].startswith(("parsed", "valid", "stable_"))]
    metrics = pd.DataFrame(rows, columns=["method", "metric", "value", "lo", "hi", "count", "n"])
    for col in ("count", "n"):
        metrics[col] = pd.to_numeric(metrics[col], errors="coerce").astype("Int64")
    with_csv = Path(out_csv)
    with_csv.parent.mkdir(parents=True, exist_ok=True)
    from matfuse.io import atomic_path

    with atomic_path(with_csv) as tmp:
        metrics.to_csv(tmp, index=False)
    text = "# Generation: FlowLLM and its comparison rows\n\n"
    text += summary_table(list(loaded.values()), None, cal)
    # wall time per stage
    text += "\n## Wall time per stage\n\n| stage | seconds | notes |\n|---|---|---|\n"
    for stage, p in stage_summaries.items():
        s = json.loads(Path(p).read_text())
        note = ""
        if "parse_rate" in s:
            note = f"parse rate {100 * s['parse_rate']:.1f} % of {s['n_samples']}"
        elif "pair_yield" in s:
            note = (f"pair yield {100 * s['pair_yield']:.1f} % ({s['n_pairs']} of {s['n_samples']} formula-conditioned "
                    f"samples; {s['targets_with_a_pair']} of {s['n_targets']} training crystals)")
        elif "best_val_loss" in s:
            note = f"{s['n_parameters']:,} parameters, best val loss {s['best_val_loss']:.4f} (epoch {s['best_epoch']}/{s['epochs_run']})"
            if "tokens_per_second" in s:
                note += f", {s['tokens_per_second']:.0f} tokens/s"
        elif "n_structures" in s:
            note = f"{s['n_structures']} of {s['n_samples']} samples with a structure, {s['steps']} Euler steps"
        text += f"| {stage} | {s.get('stage_seconds', float('nan')):.0f} | {note} |\n"
    for m, s in loaded.items():
        text += f"| evaluate {m} | {s.get('timings', {}).get('total_s', float('nan')):.0f} | CHGNet relaxations: {s.get('relax', {}).get('n')} |\n"
    if cal is not None:
        text += f"| evaluate calibration | {cal.get('seconds', float('nan')):.0f} | {cal.get('n_drawn')} MP-20 test structures |\n"
    # examples
    example_method = "flowllm" if "flowllm" in eval_samples else next(iter(eval_samples), None)
    if example_method is not None:
        df = pd.read_parquet(eval_samples[example_method])
        cols = [c for c in ("sample_id", "formula", "nsites", "valid", "e_hull_chgnet", "ef_model", "e_hull_model", "novel")
                if c in df.columns]
        key = next((c for c in ("e_hull_chgnet", "e_hull_model") if c in df.columns and df[c].notna().any()), None)
        if key is not None:
            df = df[df[key].notna()].sort_values(key)
        elif "parsed" in df.columns:
            df = df[df["parsed"]]
        head = df[cols].head(n_examples)
        order = f"lowest {key} first" if key else "no E_hull available"
        text += f"\n## A few generated crystals ({example_method}, {order})\n\n"
        text += "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
        for _, r in head.iterrows():
            text += "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.tolist()) + " |\n"
    text += ("\nE_hull in eV/atom; `e_hull_chgnet`: CHGNet-relaxed energy against CHGNet energies of the training "
             "split's reference phases; `ef_model` / `e_hull_model`: the project's formation-energy model against the "
             "training collection's DFT hull. Histograms: `ehull_chgnet.png`, `ehull_model.png`.\n")
    write_text(text, out_md)
    present = {m: p for m, p in eval_samples.items()}
    plot_ehull_histograms(present, hist_chgnet, column="e_hull_chgnet")
    plot_ehull_histograms(present, hist_model, column="e_hull_model")
    return metrics
