"""``matfuse``: predict with trained models on your own structures, list models.

    matfuse predict --model results/models/mp/formation_energy_per_atom/cgcnn/none/none \\
                    --structures my_cifs/ POSCAR other.extxyz table.csv --out preds.csv
    matfuse models [--root results/models]

``--model`` is a model folder (``model.pt`` + ``config.json``, as the workflow writes them) or a
folder of seed folders (``seed0``, ``seed1``, ...; learning-curve sizes ``n<N>-seed<k>`` are left
out): every seed is one ensemble member, and the prediction is their mean with their standard
deviation as the uncertainty. ``--structures`` takes CIF / POSCAR / extxyz / ASE-readable files,
folders of them and tables (CSV / JSON / Parquet with a structure column, positions records).

The structures go through the workflow's own stage functions in a work folder (``--work-dir``):
the same validation as the ingest (a bad structure is a row with the reason, never a crash), the
same graphs, and for text models the same robocrys texts and embeddings, with the caches of
``--config`` (default ``config.yaml``: ``text.cache_dir`` and the encoder of ``embeddings.<name>``).
Intermediate files go to ``<work-dir>/<hash of the input structures>/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger("matfuse.cli")

STRUCTURE_SUFFIXES = {".cif", ".vasp", ".poscar", ".extxyz", ".xyz", ".traj", ".db"}
TABLE_SUFFIXES = {".csv", ".tsv", ".json", ".jsonl", ".parquet", ".gz", ".zip"}
POSCAR_NAMES = {"POSCAR", "CONTCAR"}


# --------------------------------------------------------------------------- models
def ensemble_members(model: str | Path) -> list[Path]:
    """Model folders of ``model``: itself (it holds model.pt) or its ``seed<k>`` sub-folders.

    ``model`` may also name a shipped model (:mod:`matfuse.pretrained`, ``matfuse models``).
    """
    from matfuse.pretrained import resolve

    path = resolve(model)
    if (path / "model.pt").is_file():
        return [path]
    if not path.is_dir():
        raise SystemExit(f"matfuse: --model {model}: no such folder (a model folder holds model.pt and config.json)")
    seeds = sorted((p for p in path.iterdir() if p.is_dir() and p.name.startswith("seed") and (p / "model.pt").is_file()),
                   key=lambda p: p.name)
    if not seeds:
        folds = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name.startswith("fold"))
        hint = f" (k-fold runs: pick one fold's model, e.g. {path / folds[0]})" if folds else ""
        raise SystemExit(f"matfuse: --model {model}: neither model.pt nor seed*/model.pt inside{hint}")
    return seeds


def _model_config(member: Path) -> dict[str, Any]:
    return json.loads((member / "config.json").read_text())


def _path_keys(member: Path) -> dict[str, str] | None:
    """dataset/target/model/encoder/variant of a workflow model folder (None if it is not one)."""
    parts = member.resolve().parts
    if len(parts) < 7:
        return None
    return dict(zip(("dataset", "target", "model", "encoder", "variant", "run"), parts[-6:]))


# --------------------------------------------------------------------------- structures
def _files(paths: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and (f.suffix.lower() in STRUCTURE_SUFFIXES | TABLE_SUFFIXES
                                                                      or f.name in POSCAR_NAMES))
        elif p.exists():
            out.append(p)
        else:
            raise SystemExit(f"matfuse: --structures {p}: no such file or folder")
    if not out:
        raise SystemExit("matfuse: --structures: no structure files found")
    return out


def read_structures(paths: Sequence[str]) -> pd.DataFrame:
    """Raw records (material_id, structure, structure_format, provenance) of files, folders and tables."""
    from matfuse.config import TableSource
    from matfuse.sources.table import fetch, read_ase

    frames = []
    for f in _files(paths):
        suffix = f.suffix.lower()
        if suffix in {".extxyz", ".xyz", ".traj", ".db"}:
            df = read_ase(f)
            ids = df["material_id"] if "material_id" in df.columns else df["index"].map(lambda k: f"{f.stem}:{k}")
            frames.append(pd.DataFrame({"material_id": ids.astype(str), "structure": df["structure"],
                                        "structure_format": "pymatgen"}))
        elif suffix in TABLE_SUFFIXES and suffix != ".cif":
            raw = fetch(TableSource(path=str(f), formula_column=None, nsites_column=None))
            frames.append(raw[["material_id", "structure", "structure_format"]])
        else:
            fmt = "cif" if suffix == ".cif" else "poscar"
            try:
                text = f.read_text(errors="replace")
            except OSError as exc:
                text = None
                log.warning("%s: cannot read: %s", f, exc)
            frames.append(pd.DataFrame({"material_id": [f.stem if f.name not in POSCAR_NAMES else f.parent.name + "/" + f.name],
                                        "structure": [text], "structure_format": [fmt]}))
    raw = pd.concat(frames, ignore_index=True)
    raw["provenance"] = json.dumps({"source": "matfuse predict"})
    return raw


# --------------------------------------------------------------------------- predict
def predict_structures(models: Sequence[str], structures: Sequence[str], out: str | None, work_dir: str | None,
                       config: str | None, device: str = "auto", threads: int = 1) -> pd.DataFrame:
    """Predictions (mean and std over the members of each ``--model``) for ``structures``."""
    import pyarrow.parquet as pq

    from matfuse.config import DatasetConfig, GraphConfig, TableSource, load_config
    from matfuse.graphs.build import build_graphs
    from matfuse.ingest import canonicalise
    from matfuse.io import write_parquet
    from matfuse.models import model_inputs
    from matfuse.predict import predict

    raw = read_structures(structures)
    key = hashlib.sha256(pd.util.hash_pandas_object(raw[["material_id"]], index=False).values.tobytes()
                         + "".join(map(str, raw["structure"].tolist())).encode()).hexdigest()[:16]
    # one sub-folder per set of input structures: graphs / texts / embeddings there belong to these inputs only
    work = Path(work_dir or Path(".matfuse") / "predict") / key
    work.mkdir(parents=True, exist_ok=True)
    ds_cfg = DatasetConfig(source=TableSource(path="-", formula_column=None, nsites_column=None), max_sites=10_000)
    entries, rejects = canonicalise(raw, ds_cfg, "predict", workers=1)
    entries_path = work / "entries.parquet"
    write_parquet(entries, entries_path)
    warnings: dict[str, list[str]] = {}
    for r in rejects.itertuples():
        warnings.setdefault(str(r.material_id), []).append(f"{r.stage}: {r.reason}")

    wf = load_config(config) if config else (load_config("config.yaml") if Path("config.yaml").exists() else None)
    results = []
    for model in models:
        members = ensemble_members(model)
        preds = []
        for member in members:
            mcfg = _model_config(member)
            name = mcfg["summary"]["model"]
            inputs = model_inputs(name)
            graphs_path = emb_path = None
            if "graph" in inputs:
                gcfg = GraphConfig.model_validate(mcfg["graph"])
                tag = hashlib.sha256(json.dumps(gcfg.model_dump(), sort_keys=True).encode()).hexdigest()[:8]
                graphs_path = work / f"graphs-{tag}.parquet"
                # a cached table from before bond vectors were stored is rebuilt (ALIGNN needs them)
                if not graphs_path.exists() or "edge_vec" not in pq.read_schema(graphs_path).names:
                    _, grej = build_graphs(entries_path, graphs_path, gcfg, work / f"graphs-{tag}.rejects.parquet")
                    for r in grej.itertuples():
                        warnings.setdefault(str(r.material_id), []).append(f"graphs: {r.reason}")
            texts_path = variant = None
            if "text" in inputs:
                emb_path = _embeddings(member, mcfg, wf, entries_path, work, warnings)
            if "tokens" in inputs:  # fine-tuned encoder: texts only (the checkpoint names its tokenizer)
                texts_path = _texts(wf, entries_path, work, warnings)
                variant = (_path_keys(member) or {}).get("variant", "all")
            out_path = work / f"pred-{hashlib.sha256(str(member.resolve()).encode()).hexdigest()[:12]}.parquet"
            p = predict(member, entries_path, None, graphs_path, emb_path, out_path, device=device,
                        texts_path=texts_path, variant=variant)
            preds.append(p.set_index("material_id")["y_pred"].astype(float))
        stack = pd.concat(preds, axis=1)
        target = _model_config(members[0])["summary"]["target"]
        results.append(pd.DataFrame({
            "model": str(model), "target": target, "n_models": len(members),
            "prediction": stack.mean(axis=1), "uncertainty": stack.std(axis=1, ddof=1) if len(members) > 1 else np.nan,
        }))
    formulas = dict(zip(entries["material_id"], entries["formula"])) if "formula" in entries.columns else {}
    rows = []
    all_ids = list(dict.fromkeys([*raw["material_id"].map(lambda v: v if isinstance(v, str) and v else None).dropna(),
                                  *entries["material_id"]]))
    for res in results:
        for mid in all_ids:
            has = mid in res.index
            pred = float(res.loc[mid, "prediction"]) if has else np.nan
            rows.append({"material_id": mid, "formula": formulas.get(mid), "model": res["model"].iloc[0] if len(res) else None,
                         "target": res["target"].iloc[0] if len(res) else None,
                         "prediction": pred, "uncertainty": float(res.loc[mid, "uncertainty"]) if has else np.nan,
                         "n_models": int(res["n_models"].iloc[0]) if len(res) else 0,
                         "warnings": "; ".join(warnings.get(mid, [])) or (None if np.isfinite(pred) else "no prediction (missing input)")})
    table = pd.DataFrame(rows)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False, float_format="%.6g")
    return table


def _embeddings(member: Path, mcfg: dict[str, Any], wf: Any, entries_path: Path, work: Path,
                warnings: dict[str, list[str]]) -> Path:
    """Texts (robocrys, with the config's cache) and embeddings (the encoder the model was trained with)."""
    from matfuse.embed.text import embed_dataset

    keys = _path_keys(member) or {}
    encoder = keys.get("encoder")
    variant = keys.get("variant", "all")
    if wf is None or encoder not in getattr(wf, "embeddings", {}):
        raise SystemExit(f"matfuse: {member} is a text model (encoder {encoder!r}): pass --config with that "
                         "`embeddings` entry (the workflow config it was trained with)")
    texts = _texts(wf, entries_path, work, warnings)
    out = work / f"emb-{encoder}-{variant}.parquet"
    if not out.exists():
        embed_dataset(texts, out, variant, encoder, wf.embeddings[encoder], rejects_path=work / f"emb-{encoder}-{variant}.rejects.parquet",
                      progress=False)
    return out


def _texts(wf: Any, entries_path: Path, work: Path, warnings: dict[str, list[str]]) -> Path:
    """Robocrys texts of the input structures (the config's text settings and cache; defaults without one)."""
    from matfuse.config import TextConfig
    from matfuse.text.describe import describe_shard, merge_texts, shutdown_workers

    text_cfg: TextConfig = wf.text if wf is not None else TextConfig()
    texts = work / "texts.parquet"
    if not texts.exists():
        describe_shard(entries_path, work / "shard0.parquet", 0, 1, text_cfg.cache_dir, text_cfg)
        shutdown_workers()
        merge_texts([work / "shard0.parquet"], texts, work / "texts.rejects.parquet")
        for r in pd.read_parquet(work / "texts.rejects.parquet").itertuples():
            warnings.setdefault(str(r.material_id), []).append(f"describe: {r.reason}")
    return texts


# --------------------------------------------------------------------------- models list
def list_shipped() -> pd.DataFrame:
    """The shipped models (:mod:`matfuse.pretrained`) with the facts of their model cards."""
    from matfuse.pretrained import card, shipped

    rows = []
    for name, path in shipped().items():
        c = card(name)
        e = c["test"]["ensemble"]
        rows.append({"name": name, "target": c["target"], "units": c["units"], "model": c["model"],
                     "seeds": len(c["seeds"]), "n_train": c["n_train"], "test_mae": e["mae"], "test_r2": e["r2"],
                     "card": str(path / "MODEL_CARD.md")})
    return pd.DataFrame(rows)


def list_models(root: str | Path = "results/models", metrics: str | Path = "results/metrics.csv") -> pd.DataFrame:
    """Locally trained models (one row per model folder group), with their test MAE where metrics.csv has it."""
    root = Path(root)
    rows = []
    for cfg_path in sorted(root.rglob("config.json")):
        member = cfg_path.parent
        if not (member / "model.pt").is_file():
            continue
        c = json.loads(cfg_path.read_text())
        s = c.get("summary", {})
        keys = _path_keys(member) or {}
        rows.append({"path": str(member.parent), "dataset": keys.get("dataset"), "target": s.get("target"),
                     "model": s.get("model"), "encoder": keys.get("encoder"), "variant": keys.get("variant"),
                     "run": member.name, "n_train": (s.get("counts", {}).get("train", {}) or {}).get("used"),
                     "best_val_mae": s.get("best_val_mae")})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if Path(metrics).exists():
        m = pd.read_csv(metrics)
        m = m[(m["split"] == "test") & (m.get("subset", pd.Series("all", index=m.index)).fillna("all") == "all")]
        m = m.assign(run=m.apply(lambda r: (f"fold{int(r['fold'])}-" if "fold" in m.columns and pd.notna(r["fold"]) else "")
                                 + (f"n{int(r['n_train'])}-" if "n_train" in m.columns and pd.notna(r["n_train"]) else "")
                                 + f"seed{int(r['seed'])}", axis=1))
        df = df.merge(m[["train_dataset", "target", "model", "text_encoder", "text_variant", "run", "mae"]].rename(
            columns={"train_dataset": "dataset", "text_encoder": "encoder", "text_variant": "variant", "mae": "test_mae"}),
            on=["dataset", "target", "model", "encoder", "variant", "run"], how="left")
    return df


# --------------------------------------------------------------------------- entry point
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="matfuse", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predict properties of structures with trained models",
                       description="Predict with one or more models (each a model folder or a folder of seed folders: "
                       "a seed ensemble gives mean ± std). One output row per structure and model; bad structures get "
                       "a row with the reason.")
    p.add_argument("--model", action="append", required=True,
                   help="shipped model name (see `matfuse models`), model folder or folder of seed folders (repeatable)")
    p.add_argument("--structures", nargs="+", required=True,
                   help="CIF / POSCAR / extxyz / ASE files, folders of them, or tables (CSV/JSON/Parquet)")
    p.add_argument("--out", help="CSV to write (default: print to standard output)")
    p.add_argument("--config", help="workflow config with the text caches and encoders (default: ./config.yaml)")
    p.add_argument("--work-dir", help="folder for the intermediate files, one sub-folder per input set (default .matfuse/predict)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    m = sub.add_parser("models", help="list shipped and locally trained models", description="List the shipped models "
                       "(with their model cards) and the model folders under --root with target, training size, best "
                       "validation MAE and the test MAE of metrics.csv.")
    m.add_argument("--root", default="results/models")
    m.add_argument("--metrics", default="results/metrics.csv")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "predict":
        table = predict_structures(args.model, args.structures, args.out, args.work_dir, args.config, args.device)
        if not args.out:
            table.to_csv(sys.stdout, index=False, float_format="%.6g")
        return 0
    ship = list_shipped()
    print("shipped models (matfuse predict --model NAME; card: MODEL_CARD.md):")
    print(ship.to_string(index=False) if not ship.empty else "  none")
    df = list_models(args.root, args.metrics)
    print(f"\nlocally trained models under {args.root}:")
    print(df.to_string(index=False) if not df.empty else "  none")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
