"""Paper-style Markdown tables from ``results/metrics.csv`` (mean ± std over seeds).

Each table states our dataset sizes and the protocol deviations underneath; published numbers
are shown only where they were transcribed from the paper (``PUBLISHED``), never invented.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from matfuse.io import write_text

log = logging.getLogger(__name__)

#: Published test MAEs transcribed from the papers, keyed (paper, model, target).  Empty entries
#: are shown as "n/a": we could not read the paper's table on this offline machine.
PUBLISHED: dict[tuple[str, str, str], float] = {}


def _fmt(values: pd.Series, digits: int = 3) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f} (1 seed)"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f} ({len(v)})"


def summarise(metrics: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Mean/std over seeds of MAE, RMSE, R² per experiment (excluding the seed)."""
    keys = ["dataset", "train_dataset", "target", "model", "text_encoder", "text_variant"]
    m = metrics[metrics["split"] == split]
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
    models = ["cgcnn", "text", "matmmfuse", "matmmfuse_tokens"]
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
        "`matmmfuse` is the published one-token fusion (its attention softmax is identically 1), "
        "`matmmfuse_tokens` attends over atom tokens. Published numbers: not transcribed (paper tables "
        "not readable offline here).",
        "",
    ]
    return "\n".join(lines)


def crysmmnet_table(metrics: pd.DataFrame) -> str:
    own = metrics[metrics["dataset"] == metrics["train_dataset"]]
    s = summarise(own[own["model"].isin(["cgcnn", "crysmmnet"])])
    lines = ["# CrysMMNet (Das et al., UAI 2023): graph backbone with and without text, test MAE", ""]
    if s.empty or not (s["model"] == "crysmmnet").any():
        return "\n".join(lines + ["No CrysMMNet metrics yet (add `crysmmnet` to training.models).", ""])
    targets = sorted(s["target"].unique())
    lines += ["| dataset | model | " + " | ".join(targets) + " |", "|---|---|" + "---|" * len(targets)]
    for (ds, label), sl in s.assign(label=s.apply(_model_label, axis=1)).groupby(["dataset", "label"], sort=False):
        cells = [sl.loc[sl["target"] == t, "mae"].iloc[0] if (sl["target"] == t).any() else "—" for t in targets]
        lines.append(f"| {ds} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "Backbone: CGCNN. Deviations: text encoder as configured (paper: SciBERT, [CLS]).", ""]
    return "\n".join(lines)


def write_tables(metrics_path: str | Path, out_dir: str | Path, extra: dict[str, str] | None = None) -> list[Path]:
    """Stage function: write one Markdown table per paper and an index ``all.md``."""
    metrics = pd.read_csv(metrics_path)
    out_dir = Path(out_dir)
    tables = {"matmmfuse.md": matmmfuse_table(metrics), "crysmmnet.md": crysmmnet_table(metrics)}
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
