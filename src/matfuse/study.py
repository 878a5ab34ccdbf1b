"""The study report (``make study`` -> ``results/study/results.md``, copied to docs/results.md).

From the run's ``results/metrics.csv``, hull checks, split files, benchmark files and Snakemake
logs: the paper tables with the published numbers beside ours (:data:`PUBLISHED`, each with its
source and whether it is comparable; :mod:`matfuse.published`), the fusion-vs-CGCNN / vs-text effects as paired per-seed
differences, the learning curve, the text-variant ablation, the E_hull check and the wall time
per stage. Every number in it comes from those files; nothing is typed in here except the
published values, each copied from ``../shared/papers/published.md`` with its source.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matfuse.io import atomic_path, write_text
from matfuse.published import PUBLISHED
from matfuse.tables import mean_std

log = logging.getLogger(__name__)

FUSION = ("matmmfuse", "matmmfuse_frozen", "matmmfuse_tokens", "crysmmnet", "crysmmnet_alignn")
MODEL_ORDER = ["cgcnn", "cgcnn_paper", "text", "text_finetune", "matmmfuse", "matmmfuse_frozen", "matmmfuse_tokens",
               "crysmmnet", "alignn", "crysmmnet_alignn"]
TARGET_NAMES = {
    "formation_energy_per_atom": ("Formation energy", "eV/atom"),
    "band_gap": ("Band gap", "eV"),
    "efermi": ("Fermi energy", "eV"),
    "e_above_hull": ("Energy above hull", "eV/atom"),
}


# --------------------------------------------------------------------------- helpers
def _f(x: float, d: int = 3) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def own_test_rows(metrics: pd.DataFrame, subset: str = "all") -> pd.DataFrame:
    """Test-split rows of models trained on their own dataset, full training set."""
    m = metrics[(metrics["split"] == "test") & (metrics["dataset"] == metrics["train_dataset"])]
    if "subset" in m.columns:
        m = m[m["subset"].fillna("all") == subset]
    if "n_train" in m.columns:
        m = m[m["n_train"].isna()]
    return m


def per_seed(rows: pd.DataFrame, model: str, variant: str | None = None, col: str = "mae") -> pd.Series:
    sel = rows[rows["model"] == model]
    if variant is not None:
        sel = sel[sel["text_variant"] == variant]
    elif model not in ("cgcnn",) and "text_variant" in sel.columns:
        sel = sel[sel["text_variant"].isin(["all", "none"])]
    return sel.set_index("seed")[col].astype(float)


def paired_change(a: pd.Series, b: pd.Series) -> tuple[str, int]:
    """Per-seed % change of MAE ``a`` relative to ``b`` (paired on the seed): 'mean ± std (n)'."""
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return "—", 0
    d = np.array([100.0 * (a[s] - b[s]) / b[s] for s in seeds])
    if len(d) == 1:
        return f"{d[0]:+.1f} % (1 seed)", 1
    return f"{d.mean():+.1f} ± {d.std(ddof=1):.1f} % ({len(d)})", len(d)


def effect_vs_noise(a: pd.Series, b: pd.Series) -> str:
    """Mean paired MAE difference over its standard error, in words a reader can use."""
    seeds = sorted(set(a.index) & set(b.index))
    if len(seeds) < 2:
        return "1 seed: no noise estimate"
    d = np.array([a[s] - b[s] for s in seeds])
    se = d.std(ddof=1) / np.sqrt(len(d))
    if se == 0:
        return "identical on every seed"
    t = d.mean() / se
    from scipy.stats import t as student_t

    word = "exceeds" if abs(t) > student_t.ppf(0.975, len(d) - 1) else "within"  # two-sided, 95 %
    return f"t = {t:+.1f} over {len(d)} paired seeds ({word} seed noise at 95 %)"


# --------------------------------------------------------------------------- sections
def target_table(metrics: pd.DataFrame, target: str, subset: str = "all") -> list[str]:
    rows = own_test_rows(metrics, subset)
    rows = rows[rows["target"] == target]
    if rows.empty:
        return []
    name, unit = TARGET_NAMES.get(target, (target, ""))
    label = f"{name} ({unit})" + (", entries with y > 0 only" if subset != "all" else "")
    n = int(rows["n"].max())
    lines = [f"### {label}: test MAE, mean ± std over seeds (count)", "",
             f"Test entries: {n}.", "",
             "| model | MAE | R² | vs cgcnn (paired, per seed) | vs text (paired) | effect vs cgcnn |",
             "|---|---|---|---|---|---|"]
    cg = per_seed(rows, "cgcnn")
    tx = per_seed(rows, "text")
    models = [m for m in MODEL_ORDER if (rows["model"] == m).any()] + sorted(set(rows["model"]) - set(MODEL_ORDER))
    for model in models:
        mae = per_seed(rows, model)
        r2 = per_seed(rows, model, col="r2")
        vs_cg = paired_change(mae, cg)[0] if model != "cgcnn" else ""
        vs_tx = paired_change(mae, tx)[0] if model != "text" else ""
        eff = effect_vs_noise(mae, cg) if model != "cgcnn" else ""
        lines.append(f"| {model} | {mean_std(mae.to_numpy())} | {mean_std(r2.to_numpy(), 3)} | {vs_cg} | {vs_tx} | {eff} |")
    pubs = [p for p in PUBLISHED if p.target in (target, "all", "all four")]
    pubs = [p for p in pubs if ("Eg > 0" in p.value) == (subset != "all")]
    if pubs:
        lines += ["", "Published (not measured here):", "", "| paper | model | value | data | source | comparable? |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {p.paper} | {p.model} | {p.value} | {p.data} | {p.source} | {p.comparable} |" for p in pubs]
    return lines + [""]


def learning_curve(metrics: pd.DataFrame, out_png: str | Path | None, target: str = "formation_energy_per_atom") -> list[str]:
    m = metrics[(metrics["split"] == "test") & (metrics["target"] == target)
                & (metrics["dataset"] == metrics["train_dataset"])]
    if "subset" in m.columns:
        m = m[m["subset"].fillna("all") == "all"]
    sized = m[m["n_train"].notna()]
    if sized.empty:
        return []
    models = sorted(set(sized["model"]))
    full_n = {}
    tr = metrics[(metrics["split"] == "train") & (metrics["target"] == target) & metrics["n_train"].isna()]
    if "subset" in tr.columns:
        tr = tr[tr["subset"].fillna("all") == "all"]
    for model in models:
        t = tr[(tr["model"] == model)]
        if len(t):
            full_n[model] = int(t["n"].max())
    pts: dict[str, list[tuple[int, float, float, int]]] = {}
    for model in models:
        mm = m[(m["model"] == model) & m["text_variant"].isin(["all", "none"])]
        for n_train, g in mm.groupby(mm["n_train"].fillna(-1)):
            size = full_n.get(model) if n_train == -1 else int(n_train)
            if size is None:
                continue
            v = g["mae"].astype(float).to_numpy()
            pts.setdefault(model, []).append((size, float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)))
    lines = [f"### Learning curve ({TARGET_NAMES[target][0].lower()}, test MAE vs training-set size)", "",
             "| model | " + " | ".join(f"n_train = {s}" for s, *_ in sorted(next(iter(pts.values())))) + " |",
             "|---|" + "---|" * len(next(iter(pts.values())))]
    for model, p in pts.items():
        lines.append(f"| {model} | " + " | ".join(f"{mu:.3f} ± {sd:.3f} ({k})" for _, mu, sd, k in sorted(p)) + " |")
    lines += ["", "Smaller sets are nested prefixes of one fixed permutation of the training split (same entries for "
              "every model and seed); validation and test sets are the full ones.", ""]
    if out_png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
        for model, p in pts.items():
            p = sorted(p)
            ax.errorbar([a for a, *_ in p], [b for _, b, *_ in p], yerr=[c for _, _, c, _ in p],
                        marker="o", capsize=3, label=model)
        ax.set_xscale("log")
        ax.set_xlabel("training entries")
        ax.set_ylabel(f"test MAE ({TARGET_NAMES[target][1]})")
        ax.set_title("learning curve (mean ± std over seeds)", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(out_png) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        lines += [f"![learning curve]({Path(out_png).name})", ""]
    return lines


def ablation(metrics: pd.DataFrame) -> list[str]:
    rows = own_test_rows(metrics)
    rows = rows[rows["text_variant"].isin(["all", "key", "single"])]
    counts = rows.groupby(["target", "model"])["text_variant"].nunique()
    pairs = [k for k, v in counts.items() if v > 1]
    if not pairs:
        return []
    lines = ["### Text-variant ablation (Massa et al.'s All / Key / Single), test MAE", "",
             "| target | model | all | key | single | key vs all (seed 0) | single vs all (seed 0) |",
             "|---|---|---|---|---|---|---|"]
    for target, model in pairs:
        sel = rows[(rows["target"] == target) & (rows["model"] == model)]
        by = {v: sel[sel["text_variant"] == v].set_index("seed")["mae"].astype(float) for v in ("all", "key", "single")}
        cells = [mean_std(by[v].to_numpy()) for v in ("all", "key", "single")]
        rel = []
        for v in ("key", "single"):
            s0 = sorted(set(by[v].index) & set(by["all"].index))
            rel.append(paired_change(by[v].loc[s0], by["all"].loc[s0])[0] if s0 else "—")
        lines.append(f"| {target} | {model} | " + " | ".join(cells + rel) + " |")
    lines += ["", "`all` = the full Robocrystallographer text, `key` = its key-facts summary, `single` = one "
              "sentence (see README); key and single ran with fewer seeds than all where stated in parentheses.", ""]
    return lines


def ensemble_calibration(prediction_paths: list[str | Path]) -> pd.DataFrame:
    """Seed ensembles on the test split: per (dataset, target, model, encoder, variant[, fold]) with >= 2
    seeds, MAE of the ensemble mean, mean seed std, and the share of test entries whose error is within 1
    and 2 ensemble standard deviations (a Gaussian would give 68 % and 95 %). The ensemble is
    :func:`matfuse.predict.seed_ensemble`, as in the ensemble Parquets and ``matfuse predict``."""
    from matfuse.evaluate import parse_prediction_path
    from matfuse.predict import calibration, seed_ensemble

    groups: dict[tuple, list[pd.DataFrame]] = {}
    for p in prediction_paths:
        k = parse_prediction_path(p)
        if k["zero_shot"] or k["n_train"] is not None:
            continue
        key = (k["dataset"], k["target"], k["model"], k["text_encoder"], k["text_variant"], k.get("fold"))
        groups.setdefault(key, []).append(pd.read_parquet(p))
    rows = []
    for key, frames in groups.items():
        if len(frames) < 2:
            continue
        ens = seed_ensemble(frames)
        t = ens[ens["split"] == "test"]
        cal = calibration(t["y_true"], t["y_pred"], t["y_std"])
        rows.append(dict(zip(("dataset", "target", "model", "text_encoder", "text_variant", "fold"), key),
                         seeds=len(frames), n=cal["n"], ensemble_mae=cal["mae"], mean_std=cal["mean_std"],
                         within_1std=cal["within_1std"], within_2std=cal["within_2std"]))
    return pd.DataFrame(rows)


def calibration_section(prediction_paths: list[str | Path]) -> list[str]:
    cal = ensemble_calibration(prediction_paths)
    if cal.empty:
        return []
    lines = ["### Seed-ensemble uncertainty on the test split", "",
             "Mean of the seeds' predictions as the prediction, their standard deviation as the uncertainty "
             "(what `matfuse predict` reports for a folder of seed folders).", "",
             "| target | model | seeds | test n | ensemble MAE | mean std | error within 1 std | within 2 std |",
             "|---|---|---|---|---|---|---|---|"]
    for r in cal.sort_values(["target", "model"]).itertuples():
        lines.append(f"| {r.target} | {r.model} | {r.seeds} | {r.n} | {r.ensemble_mae:.3f} | {r.mean_std:.3f} | "
                     f"{100 * r.within_1std:.0f} % | {100 * r.within_2std:.0f} % |")
    lines += ["", "A calibrated Gaussian uncertainty would put 68 % of the errors within 1 std and 95 % within 2; "
              "seed spread alone (same data, same split) misses the model's bias, so it is expected to be "
              "over-confident.", ""]
    return lines


def hull_section(check_paths: list[str | Path]) -> list[str]:
    lines = []
    for p in check_paths:
        c = json.loads(Path(p).read_text())
        k = c.get("checks", {})
        lines += [f"### Energy above hull: our collection hull vs Materials Project's own value", "",
                  f"Hull of {c['n_rows']} entries of `{c['collection']}` (all cell sizes) + the elements at 0 eV/atom, "
                  f"from the collection's formation energies per atom; {c['n_on_hull']} entries on the hull "
                  f"(e_above_hull < 1 meV/atom).", ""]
        if k.get("n_compared"):
            lines += ["| compared (ids in both) | MAE (eV/atom) | median abs. diff. | share within 0.05 | within 0.1 | "
                      "on hull in both / ours only / MP only | Spearman |", "|---|---|---|---|---|---|---|",
                      f"| {k['n_compared']} of {k['n_reference']} MP-20 rows | {k['mae']:.4f} | {k['median_abs_diff']:.4f} | "
                      f"{100 * k['share_within']:.1f} % | {100 * k['share_within_0_1']:.1f} % | "
                      f"{k['on_hull_both']} / {k['on_hull_ours_only']} / {k['on_hull_ref_only']} | {k['spearman']:.3f} |", "",
                      "Reference: `e_above_hull` of the MP-20 rows in " + ", ".join(f"`{r}`" for r in k.get("reference", []))
                      + ". Ours is 'the hull of this collection, legacy MP energies'. Two things separate it from "
                      "MP's value: MP's hull holds phases this collection lacks (which can only raise MP's value), and "
                      "MP's energies are newer calculations with MP2020 corrections (either sign). Mean ours − MP = "
                      f"{k['mean_diff']:+.4f} eV/atom.", ""]
    return lines


def _parse_snakemake_logs(log_dir: Path, since: datetime | None) -> pd.DataFrame:
    """Jobs of the Snakemake logs (rule, start, end) started at or after ``since``."""
    stamp = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
    rows: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("*.snakemake.log")):
        cur_time, pending_rule, jobs = None, None, {}
        for line in path.read_text(errors="replace").splitlines():
            m = stamp.match(line.strip())
            if m:
                cur_time = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
                continue
            s = line.strip()
            if s.startswith(("rule ", "localrule ")) and s.endswith(":"):
                pending_rule = s.split()[1][:-1]
            elif s.startswith("jobid:") and pending_rule:
                jobs[s.split()[1]] = {"rule": pending_rule, "start": cur_time}
                pending_rule = None
            elif s.startswith("Finished jobid:"):
                jid = s.split()[2]
                if jid in jobs and cur_time is not None:
                    jobs[jid]["end"] = cur_time
                    rows.append(jobs.pop(jid))
    df = pd.DataFrame(rows, columns=["rule", "start", "end"])
    if since is not None and len(df):
        df = df[df["start"] >= since]
    return df


def wall_time(benchmark_dir: Path, log_dir: Path, since: datetime | None) -> list[str]:
    jobs = _parse_snakemake_logs(log_dir, since)
    bench = []
    for p in sorted(benchmark_dir.rglob("*.tsv")):
        try:
            b = pd.read_csv(p, sep="\t")
        except Exception:  # noqa: BLE001 - a half-written file must not break the report
            continue
        if len(b):
            bench.append({"rule": p.relative_to(benchmark_dir).parts[0], "s": float(b["s"].iloc[0]),
                          "max_rss": float(pd.to_numeric(b.get("max_rss", pd.Series([np.nan])), errors="coerce").iloc[0])})
    bench = pd.DataFrame(bench, columns=["rule", "s", "max_rss"])
    lines = ["### Wall time", ""]
    if len(jobs):
        span = (jobs["end"].max() - jobs["start"].min()).total_seconds() / 60
        lines += [f"From the first job's start ({jobs['start'].min():%Y-%m-%d %H:%M}) to the last job's end "
                  f"({jobs['end'].max():%H:%M}): **{span:.0f} min** on this machine, {len(jobs)} jobs.", "",
                  "| rule | jobs | span (first start → last end, min) | sum of job times (benchmark, min) | max RSS (MB) |",
                  "|---|---|---|---|---|"]
        for rule, g in jobs.groupby("rule"):
            bt = bench[bench["rule"] == rule]
            lines.append(f"| {rule} | {len(g)} | {(g['end'].max() - g['start'].min()).total_seconds() / 60:.1f} | "
                         f"{bt['s'].sum() / 60:.1f} | {_f(bt['max_rss'].max(), 0) if len(bt) else '—'} |")
    else:
        lines.append("No Snakemake logs found.")
    return lines + [""]


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def write_report(
    metrics_path: str | Path, splits_paths: list[str | Path], hull_checks: list[str | Path], out_md: str | Path,
    out_png: str | Path, since: str | None = None, benchmark_dir: str | Path = "benchmarks",
    log_dir: str | Path = ".snakemake/log", config_path: str | None = None,
    parity_plots: list[str | Path] | None = None,
    prediction_paths: list[str | Path] | None = None,
) -> str:
    """Stage function: the study report (see the module docstring).

    ``since``: ISO time of the run's start (``make study`` writes it to results/study/started):
    the wall-time section counts only Snakemake jobs started after it. ``parity_plots`` are copied
    beside the report (named ``parity_<target>_<model>.png``) and shown in it.
    """
    import shutil
    import platform

    import torch

    metrics = pd.read_csv(metrics_path)
    when = datetime.fromisoformat(since) if since else None
    lines = ["# Study results: the paper comparisons at scale", "",
             f"Generated by `make study` (`{config_path or 'config/study.yaml'}`) at commit `{_git_commit()}` on "
             f"{datetime.now():%Y-%m-%d}; {platform.machine()}, {__import__('os').cpu_count()} CPU cores, torch "
             f"{torch.__version__}, no GPU. Every number below is read from this run's files "
             "(results/metrics.csv, results/hull/, benchmarks/, Snakemake logs).", ""]
    for sp in splits_paths:
        s = json.loads(Path(sp).read_text())
        sizes = {k: len(v) for k, v in s.items() if isinstance(v, list) and k in ("train", "val", "test")}
        lines += [f"Data: {sum(sizes.values())} entries; split `{sp}`: " + ", ".join(f"{k} {v}" for k, v in sizes.items())
                  + " (structure-grouped, seeded); model selection and early stopping on validation only.", ""]
    lines += ["## Property tables", ""]
    for target in ["formation_energy_per_atom", "band_gap"]:
        lines += target_table(metrics, target)
        if target == "band_gap":
            lines += target_table(metrics, target, subset="y>0")
    for target in sorted(set(metrics["target"]) - {"formation_energy_per_atom", "band_gap"}):
        lines += target_table(metrics, target)
    lines += calibration_section(list(prediction_paths or []))
    lines += ["## Learning curve and ablation", ""]
    lines += learning_curve(metrics, out_png)
    lines += ablation(metrics)
    if parity_plots:
        lines += ["## Parity plots (test split, every seed)", ""]
        for p in parity_plots:
            p = Path(p)
            name = f"parity_{p.parent.name}_{p.stem}.png"
            shutil.copyfile(p, Path(out_md).parent / name)
            lines += [f"![{p.parent.name} {p.stem}]({name})", ""]
    lines += ["## Labels", ""] + hull_section(hull_checks)
    lines += ["## Cost", ""] + wall_time(Path(benchmark_dir), Path(log_dir), when)
    text = "\n".join(lines) + "\n"
    write_text(text, out_md)
    return text


def publish(report_dir: str | Path = "results/study", metrics_path: str | Path = "results/metrics.csv",
            docs_dir: str | Path = "docs") -> list[Path]:
    """Copy the report to ``docs/results.md`` and its figures + metrics.csv to ``docs/results/``."""
    import shutil

    report_dir, docs_dir = Path(report_dir), Path(docs_dir)
    assets = docs_dir / "results"
    assets.mkdir(parents=True, exist_ok=True)
    out = []
    for png in sorted(report_dir.glob("*.png")):
        shutil.copyfile(png, assets / png.name)
        out.append(assets / png.name)
    shutil.copyfile(metrics_path, assets / "metrics.csv")
    out.append(assets / "metrics.csv")
    text = (report_dir / "results.md").read_text()
    text = re.sub(r"\]\(([^)/]+\.png)\)", r"](results/\1)", text)
    notes = docs_dir / "results-notes.md"  # the hand-written discussion of the published run, if any
    if notes.exists():
        text = text.rstrip("\n") + "\n\n" + notes.read_text()
    write_text(text, docs_dir / "results.md")
    out.append(docs_dir / "results.md")
    return out


if __name__ == "__main__":  # pragma: no cover - `python -m matfuse.study publish`
    import sys

    if sys.argv[1:] != ["publish"]:
        raise SystemExit("usage: python -m matfuse.study publish   (results/study -> docs/results.md, docs/results/)")
    for p in publish():
        print(p)
