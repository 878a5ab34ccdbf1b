"""Paper-style Markdown tables from ``results/metrics.csv`` (mean ± std over seeds).

Each table states our dataset sizes and the protocol deviations underneath; the published
numbers (:data:`matfuse.published.PUBLISHED`, copied with their sources from
``../shared/papers/published.md``) are listed beside them with why they are or are not
comparable; none is invented.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from matfuse.io import write_text
from matfuse.published import MASSA_TABLE6, markdown, published_for

log = logging.getLogger(__name__)


def _published(paper: str) -> list[str]:
    rows = published_for(paper)
    return ["Published (from `../shared/papers/published.md`; not measured here):", "", *markdown(rows), ""] if rows else []


def mean_std(values, digits: int = 3) -> str:  # noqa: ANN001 - a Series, array or list of numbers
    """'mean ± std (count)' over seeds (finite values only; '(1 seed)' for one, '—' for none)."""
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f} (1 seed)"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f} ({len(v)})"


_fmt = mean_std


def summarise(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Mean/std over seeds of MAE, RMSE, R² per experiment (excluding the seed)."""
    keys = ["dataset", "train_dataset", "target", "model", "text_encoder", "text_variant"]
    m = metrics[metrics["split"] == split]
    # the rows over every entry, full training set (y>0 rows and learning-curve sizes are the study report's)
    if "subset" in m.columns:
        m = m[m["subset"].fillna("all") == "all"]
    if "n_train" in m.columns:
        m = m[m["n_train"].isna()]
    if m.empty:
        return pd.DataFrame(columns=[*keys, "n", "seeds", "mae", "rmse", "r2"])
    g = m.groupby(keys, dropna=False)
    out = g.agg(n=("n", "max"), seeds=("seed", "nunique")).reset_index()
    for col in ("mae", "rmse", "r2"):
        out[col] = g[col].apply(_fmt).to_numpy()
    return out


def _model_label(row: pd.Series) -> str:
    if row["text_encoder"] == "none":
        return row["model"]
    return f"{row['model']} ({row['text_encoder']}, {row['text_variant']})"


def matmmfuse_table(metrics: pd.DataFrame) -> str:
    """MatMMFuse layout: models × targets (test MAE), then zero-shot sets × models."""
    own = metrics[metrics["dataset"] == metrics["train_dataset"]]
    models = ["cgcnn", "text", "text_finetune", "matmmfuse", "matmmfuse_frozen", "matmmfuse_tokens"]
    s = summarise(own[own["model"].isin(models)])
    lines = ["# MatMMFuse (Bhattacharya & Cloutier, arXiv 2505.04634): test MAE, mean ± std (seeds)", ""]
    if s.empty:
        return "\n".join(lines + ["No metrics for these models yet.", ""])
    targets = sorted(s["target"].unique())
    for ds, sd in s.groupby("dataset"):
        lines += [f"## dataset `{ds}`", "", "| model | " + " | ".join(targets) + " |",
                  "|---|" + "---|" * len(targets)]
        for label, sl in sd.assign(label=sd.apply(_model_label, axis=1)).groupby("label", sort=False):
            cells = [sl.loc[sl["target"] == t, "mae"].iloc[0] if (sl["target"] == t).any() else "—" for t in targets]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        n = sd.groupby("target")["n"].max().to_dict()
        lines += ["", "Test-set sizes: " + ", ".join(f"{t} {n[t]}" for t in targets), ""]
    zs = metrics[(metrics["split"] == "zeroshot") & metrics["model"].isin(models)]
    if not zs.empty:
        lines += ["## zero-shot (trained on the training dataset, evaluated without retraining)", "",
                  "| evaluation set | target | model | n | MAE | R² |", "|---|---|---|---|---|---|"]
        zsum = summarise(zs.assign(split="test"))
        for _, r in zsum.iterrows():
            lines.append(f"| {r['dataset']} (from {r['train_dataset']}) | {r['target']} | {_model_label(r)} | {r['n']} | {r['mae']} | {r['r2']} |")
        lines.append("")
    lines += [
        "Deviations from the paper: offline MiniLM text encoder unless the config names SciBERT; "
        "dataset is the MT-CGCNN MP collection (legacy MP, ~2018) subset in the config, not the paper's MP snapshot; "
        "`matmmfuse` is the published model (text encoder fine-tuned end to end, MatDeepLearn CGCNN, one token "
        "per modality: its attention softmax is identically 1), `matmmfuse_frozen` the same kind of fusion on "
        "frozen cached embeddings, `matmmfuse_tokens` attends over atom tokens; `text` is an MLP on the frozen "
        "embedding, `text_finetune` the fine-tuned encoder with a regression head (the paper's SciBERT row). Zero-shot labels come from other calculations: "
        "perovskites are CMR heats of formation (RPBE, CMR reference energies, converted per atom) and GLLB-SC "
        "gaps, JARVIS is OptB88vdW; an R² below 0 means worse than predicting the set's own mean. "
        "The paper gives relative claims only (its per-property MAE tables were not found):",
        "",
        *_published("MatMMFuse"),
        *_published("CGCNN"),
    ]
    return "\n".join(lines)


def crysmmnet_table(metrics: pd.DataFrame) -> str:
    own = metrics[metrics["dataset"] == metrics["train_dataset"]]
    s = summarise(own[own["model"].isin(["cgcnn", "crysmmnet", "alignn", "crysmmnet_alignn"])])
    lines = ["# CrysMMNet (Das et al., UAI 2023): graph backbone with and without text, test MAE", ""]
    if s.empty or not s["model"].isin(["crysmmnet", "crysmmnet_alignn"]).any():
        return "\n".join(lines + ["No CrysMMNet metrics yet (add `crysmmnet` or `crysmmnet_alignn` to training.models).", ""])
    targets = sorted(s["target"].unique())
    lines += ["| dataset | model | " + " | ".join(targets) + " |", "|---|---|" + "---|" * len(targets)]
    for (ds, label), sl in s.assign(label=s.apply(_model_label, axis=1)).groupby(["dataset", "label"], sort=False):
        cells = [sl.loc[sl["target"] == t, "mae"].iloc[0] if (sl["target"] == t).any() else "—" for t in targets]
        lines.append(f"| {ds} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "Backbones: CGCNN (`crysmmnet` beside `cgcnn`) and ALIGNN, the paper's (`crysmmnet_alignn` beside "
              "`alignn`, our PyG re-implementation on the shared 12-neighbour graph). Deviations: text encoder as "
              "configured (paper: frozen MatSciBERT, "
              "[CLS]); selection on validation (the released script reports the minimum test MAE).", "",
              *_published("CrysMMNet")]
    return "\n".join(lines)


def cromel_table(cromel_paths: list[str | Path]) -> str:
    """CroMEL layout: composition model with / without CroMEL, k-fold CV on experimental enthalpies."""
    lines = ["# CroMEL (Na, npj Comput Mater 2025): experimental formation enthalpies, k-fold CV", ""]
    if not cromel_paths:
        return "\n".join(lines + ["CroMEL is not configured (`cromel:` section).", ""])
    frames = []
    for p in cromel_paths:
        df = pd.read_csv(p)
        seed = Path(p).parent.name.removeprefix("seed")
        df["seed"] = int(seed) if seed.isdigit() else 0
        frames.append(df)
    m = pd.concat(frames, ignore_index=True)
    if "protocol" not in m.columns:  # metrics written before the CV protocols existed
        m["protocol"] = "leakfree"
    lines += ["| target set | CV protocol | model | n compounds | folds × seeds | MAE (eV/atom) | R² |",
              "|---|---|---|---|---|---|---|"]
    for (ds, protocol, model), g in m.groupby(["dataset", "protocol", "model"], sort=False):
        lines.append(f"| {ds} | {protocol} | {model} | {int(g['n'].sum() / max(1, g['seed'].nunique()))} | {len(g)} | "
                     f"{_fmt(g['mae'])} | {_fmt(g['r2'])} |")
    lines += ["", "mean ± std over all folds of all seeds. Target sets: `exp_formation_enthalpy` = pymatgen's "
              "`exp_compounds.json.gz` (experimental enthalpies, eV per formula unit divided by atoms); "
              "`efe_intermetallics` = CroMEL's own 1,196 intermetallics (`form_eng_exp`, eV/atom). Protocols: "
              "`leakfree` = a fresh copy of the pretrained encoder per fold; `authors` = the released script's folds "
              "(numpy seed, array_split) and one encoder fine-tuned fold after fold (later folds have seen their test "
              "compounds). Published: R² > 0.95 with CroMEL (abstract). Source structures: the train split of the "
              "configured MP dataset only. Other deviations are listed in `src/matfuse/cromel.py`.", ""]
    return "\n".join(lines)


def write_tables(
    metrics_path: str | Path,
    out_dir: str | Path,
    cromel_paths: list[str | Path] | None = None,
    extra: dict[str, str] | None = None,
) -> list[Path]:
    """Stage function: write one Markdown table per paper and an index ``all.md``."""
    metrics = pd.read_csv(metrics_path)
    out_dir = Path(out_dir)
    tables = {
        "matmmfuse.md": matmmfuse_table(metrics),
        "crysmmnet.md": crysmmnet_table(metrics),
        "cromel.md": cromel_table(list(cromel_paths or [])),
    }
    if "massa_table6" in globals():
        tables["massa_table6.md"] = globals()["massa_table6"](metrics)
    tables.update(extra or {})
    paths = []
    for name, text in tables.items():
        write_text(text, out_dir / name)
        paths.append(out_dir / name)
    index = "# matfuse result tables\n\n" + "\n".join(f"- [{p.stem}]({p.name})" for p in paths) + "\n\n"
    index += "\n\n".join(tables.values())
    write_text(index, out_dir / "all.md")
    log.info("wrote %d tables to %s", len(paths), out_dir)
    return paths


#: Massa et al. Table 6 targets and text variants, in the paper's order.
MASSA_TARGETS = ["band_gap", "formation_energy_per_atom", "total_magnetization", "k_vrh"]
MASSA_VARIANTS = [("single", "Single"), ("key", "Key"), ("all", "All")]
#: Paper split name -> our split: the paper's test set is our validation split (model selection),
#: its holdout set our test split (never used in training or selection).
MASSA_SPLITS = [("train", "train"), ("test", "val"), ("holdout", "test")]


def massa_table6(metrics: pd.DataFrame) -> str:
    """Massa et al. (arXiv 2401.09301) Table 6 layout from ECD metrics rows.

    One section per ECD dataset (``{dataset}-ecd_{kind}``): rows = targets × text variant
    (Single / Key / All, model ``ecd_text``) followed by the image-only models; columns = RMSE
    and R² on train / test / holdout (= our train / val / test splits), mean ± std over seeds,
    a ``pretrained`` column (ImageNet weights loaded or random initialisation) and the paper's
    numbers (Table 6, :data:`matfuse.published.MASSA_TABLE6`) beside the ``ecd_text`` rows.
    """
    from matfuse.density.stage import parse_ecd_dataset

    lines = [
        "# Massa et al. (arXiv 2401.09301) Table 6 layout: charge-density image + text, RMSE / R²",
        "",
    ]
    ecd = metrics[metrics["dataset"].astype(str).map(lambda d: parse_ecd_dataset(d) is not None)]
    ecd = ecd[ecd["dataset"] == ecd["train_dataset"]] if "train_dataset" in ecd.columns else ecd
    if "subset" in ecd.columns:
        ecd = ecd[ecd["subset"].fillna("all") == "all"]
    if ecd.empty:
        return "\n".join(lines + ["No charge-density (ECD) metrics yet (configure the `density` section).", ""])

    def cell(sub: pd.DataFrame, split: str, col: str) -> str:
        v = sub.loc[sub["split"] == split, col]
        return _fmt(v) if len(v) else "—"

    def paper_cell(target: str, model: str, label: str) -> str:
        var = next((v for v, name in MASSA_VARIANTS if label.startswith(name)), None)
        vals = MASSA_TABLE6.get((target, var)) if model == "ecd_text" else None
        if not vals:
            return "—"
        return "; ".join(f"{p} {vals[p][0]:g} / {vals[p][1]:.2f}" for p, _ in MASSA_SPLITS)

    def pretrained(sub: pd.DataFrame) -> str:
        if "pretrained" not in sub.columns or sub["pretrained"].isna().all():
            return "?"
        vals = {str(v).lower() in ("true", "1", "1.0") for v in sub["pretrained"].dropna()}
        return "mixed" if len(vals) > 1 else ("ImageNet" if vals.pop() else "no (random init)")

    head = "| target | text | model | pretrained | " + " | ".join(
        f"{p} RMSE | {p} R²" for p, _ in MASSA_SPLITS
    ) + " | paper RMSE / R² |"
    sep = "|---|---|---|---|" + "---|---|" * len(MASSA_SPLITS) + "---|"
    for ds, sd in ecd.groupby("dataset", sort=True):
        base, kind = parse_ecd_dataset(str(ds))  # type: ignore[misc]
        lines += [f"## `{base}`, density kind `{kind}`", "", head, sep]
        targets = MASSA_TARGETS + sorted(set(sd["target"]) - set(MASSA_TARGETS))
        for t in targets:
            st = sd[sd["target"] == t]
            rows: list[tuple[str, str, pd.DataFrame]] = []
            for var, label in MASSA_VARIANTS:
                sv = st[(st["model"] == "ecd_text") & (st["text_variant"] == var)]
                enc = ", ".join(sorted(set(sv["text_encoder"]))) if len(sv) else ""
                rows.append((f"{label}" + (f" ({enc})" if enc else ""), "ecd_text", sv))
            for model in sorted(set(st["model"]) - {"ecd_text"}):
                rows.append(("— (image only)", model, st[st["model"] == model]))
            for label, model, sub in rows:
                cells = [cell(sub, ours, c) for _, ours in MASSA_SPLITS for c in ("rmse", "r2")]
                pre = pretrained(sub) if len(sub) else "—"
                lines.append(f"| {t} | {label} | {model} | {pre} | " + " | ".join(cells) + f" | {paper_cell(t, model, label)} |")
        n = sd.groupby("split")["n"].max().to_dict()
        lines += [
            "",
            "Split sizes (labelled entries): " + ", ".join(f"{p} {n.get(o, 0)} (ours: {o})" for p, o in MASSA_SPLITS) + ".",
            "",
        ]
    lines += [
        "Notes: paper train / test / holdout = our train / val (early stopping and model selection) / "
        "test (never used for training or selection). '—' = not run (target or variant not configured, "
        "or no labelled entry). Values: mean ± std over seeds (count in parentheses). `pretrained` says "
        "whether ImageNet weights were loaded; offline the InceptionV3 is randomly initialised, unlike the "
        "paper's. Text embeddings: the configured encoder (paper: a pre-trained LLM on Robocrystallographer "
        "text). Paper numbers: Table 6 of the paper (InceptionV3 + RoBERTa, 785 stable FCC MP crystals, 70/15/15; "
        "values as printed, the paper's targets appear scaled, so only its R² can be set beside ours; source: "
        "../shared/papers/published.md) for the ecd_text rows: train / test / holdout RMSE / R².",
        "",
    ]
    return "\n".join(lines)
