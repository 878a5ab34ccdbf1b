"""Stage functions of the charge-density branch (called by thin ``workflow/scripts/density_*.py``).

Outputs (``workflow/rules/density.smk``), with ``{ecd} = {dataset}-ecd_{kind}`` (see
:func:`ecd_dataset_name`; dataset names cannot contain '-', so the split is unambiguous)::

    results/density/{dataset}/match/table.csv, manifest.csv, rejects.parquet   (optional labelling)
    results/density/{dataset}/selection.parquet        ids kept by the FCC/stable selection
    results/density/{dataset}/selection_rejects.parquet
    results/density/{ecd}/slices.parquet               one row per material: image + metadata
    results/density/{ecd}/cubes.npz                    regridded cubes (key = id_filename(material id))
    results/density/{ecd}/previews/                    one PNG per material, <id_filename(id)>.png
    results/density/{ecd}/rejects.parquet              material_id, stage="density", reason
    results/predictions/{ecd}/{target}/{model}/{encoder}/{variant}/seed{seed}.parquet
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm import tqdm

from matfuse.density.config import KIND_FILE, DensityConfig, DensitySource, SelectionConfig
from matfuse.density.io import NpzWriter, save_preview
from matfuse.density.regrid import KindUnavailable, regrid
from matfuse.density.slice import slice_image
from matfuse.density.sources import iter_densities
from matfuse.io import UnsafeIdError, id_filename, rejects_frame, write_json, write_parquet
from matfuse.structures import dump_structure

log = logging.getLogger(__name__)

STAGE = "density"
#: Cubic space groups with F centring (Fm-3m, Fd-3m, F-43m, ...): the paper's "FCC lattice".
FCC_SPACEGROUPS = (196, 202, 203, 209, 210, 216, 219, 225, 226, 227, 228)


ECD_SEP = "-ecd_"


def ecd_dataset_name(dataset: str, kind: str) -> str:
    """Name of a (dataset, density kind) pair in result paths and metrics: ``{dataset}-ecd_{kind}``."""
    if "-" in dataset:
        raise ValueError(f"dataset name {dataset!r} must not contain '-'")
    if kind not in KIND_FILE:
        raise ValueError(f"unknown density kind {kind!r}")
    return f"{dataset}{ECD_SEP}{kind}"


def parse_ecd_dataset(name: str) -> tuple[str, str] | None:
    """``'mp-ecd_total'`` -> ``('mp', 'total')``; None for a name that is not an ECD dataset."""
    dataset, sep, kind = name.partition(ECD_SEP)
    if not sep or not dataset or kind not in KIND_FILE:
        return None
    return dataset, kind


def annotate_ecd_metrics(metrics: pd.DataFrame, prediction_paths: list[str]) -> pd.DataFrame:
    """Add ``density_kind`` and ``pretrained`` to metrics rows from the ECD prediction files.

    Both are constant columns of each ECD prediction Parquet; rows of other models get None.
    Columns already present in ``metrics`` (an evaluate.py that carries them) are kept as they are.
    """
    from matfuse.evaluate import parse_prediction_path

    keys = ["dataset", "target", "model", "text_encoder", "text_variant", "seed"]
    rows = []
    for path in prediction_paths:
        k = parse_prediction_path(path)
        import pyarrow.parquet as pq

        cols = [c for c in ("density_kind", "pretrained") if c in pq.read_schema(path).names]
        pred = pd.read_parquet(path, columns=cols) if cols else pd.DataFrame()
        extra = {c: (pred[c].iloc[0] if c in pred.columns and len(pred) else None) for c in ("density_kind", "pretrained")}
        rows.append({**{c: k[c] for c in keys}, **extra})
    missing = [c for c in ("density_kind", "pretrained") if c not in metrics.columns]
    if not missing or not rows:
        return metrics
    ann = pd.DataFrame(rows)[keys + missing]
    return metrics.merge(ann, on=keys, how="left")


def safe_name(material_id: str) -> str:
    """File-name form of an id (previews): :func:`matfuse.io.id_filename` (reversible, so two ids
    never share a preview; raises :class:`matfuse.io.UnsafeIdError` for ids no file can name)."""
    return id_filename(material_id)


def slices_table(rows: list[dict[str, Any]], size: tuple[int, int]) -> pa.Table:
    """Rows -> Arrow table with ``image`` as a fixed-size list<float32> (H*W, row-major)."""
    n_pix = int(size[0] * size[1])
    images = np.stack([r.pop("image").astype(np.float32).ravel() for r in rows]) if rows else np.zeros((0, n_pix), np.float32)
    lattices = np.stack([r.pop("lattice").astype(np.float64).ravel() for r in rows]) if rows else np.zeros((0, 9))
    meta = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False) if rows else None
    img_col = pa.FixedSizeListArray.from_arrays(pa.array(images.ravel(), pa.float32()), n_pix)
    lat_col = pa.FixedSizeListArray.from_arrays(pa.array(lattices.ravel(), pa.float64()), 9)
    if meta is None:
        return pa.table({"material_id": pa.array([], pa.string()), "image": img_col, "lattice": lat_col})
    return meta.append_column("image", img_col).append_column("lattice", lat_col)


def build_density_images(
    material_ids: list[str] | None,
    source: DensitySource,
    kind: str,
    cfg: DensityConfig,
    slices_path: str | Path,
    rejects_path: str | Path,
    cubes_path: str | Path | None = None,
    preview_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Fetch, regrid (pyrho, ``cfg.grid``) and slice (``cfg.slice``) the densities of ``kind``.

    Args:
        material_ids: ids to process (e.g. the selected entries); None = all the local manifest lists.
        source: where densities come from (local manifest or MP).
        kind: ``total`` | ``spin`` | ``valence`` (each output row records ``kind`` and ``file_kind``).
        cfg: the density section.
        slices_path: Parquet, one row per material (``image`` fixed-size list float32, H*W row-major,
            e/Å^3 (µB/Å^3 for spin); geometry, electron counts, timings, structure JSON).
        rejects_path: Parquet rejects (material_id, stage="density", reason).
        cubes_path: ``.npz`` of cubes (``cfg.cube_dtype``), key = material id; None = not stored.
        preview_dir: one PNG per material; None = none.

    Returns:
        summary dict (counts, mean timings), also logged.
    """
    if kind not in KIND_FILE:
        raise ValueError(f"unknown density kind {kind!r}")
    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    writer = NpzWriter(cubes_path) if cubes_path is not None and cfg.store_cubes else None
    ok = False
    try:
        items = iter_densities(material_ids, source, kind)
        for item in tqdm(items, desc=f"density {kind}", total=len(material_ids) if material_ids else None, mininterval=5):
            mid = item.material_id
            if item.chgcar is None:
                rejects.append({"material_id": mid, "stage": STAGE, "reason": item.reason})
                continue
            try:  # the cube and preview are stored under the id: one no file can name is rejected
                safe_name(mid)
            except UnsafeIdError as exc:
                rejects.append({"material_id": mid, "stage": STAGE, "reason": str(exc)})
                continue
            try:
                t0 = time.perf_counter()
                rg = regrid(item.chgcar, kind, cfg.grid)
                t1 = time.perf_counter()
                img, geom = slice_image(rg.cube, rg.structure, cfg.slice)
                t2 = time.perf_counter()
            except KindUnavailable as exc:
                rejects.append({"material_id": mid, "stage": STAGE, "reason": str(exc)})
                continue
            except Exception as exc:  # symmetry / interpolation failures: recorded, not fatal
                log.exception("%s: density processing failed", mid)
                rejects.append({"material_id": mid, "stage": STAGE, "reason": f"{type(exc).__name__}: {exc}"})
                continue
            if not np.all(np.isfinite(img)):
                rejects.append({"material_id": mid, "stage": STAGE, "reason": "non-finite values in the slice"})
                continue
            if writer is not None:
                writer.add(mid, rg.cube.astype(cfg.cube_dtype))
            if preview_dir is not None and cfg.previews:
                title = f"{mid} {rg.structure.composition.reduced_formula} {kind} ({''.join(map(str, cfg.slice.miller))})"
                save_preview(img, Path(preview_dir) / f"{safe_name(mid)}.png", title, "µB/Å³" if kind == "spin" else "e/Å³")
            rows.append(
                {
                    "material_id": mid,
                    "kind": kind,
                    "file_kind": item.file_kind,
                    "origin": item.origin,
                    "formula": rg.structure.composition.reduced_formula,
                    "nsites": len(rg.structure),
                    "grid_in": "x".join(map(str, item.chgcar.data["total"].shape)),
                    "grid_out": "x".join(map(str, rg.cube.shape)),
                    "electrons_in": rg.electrons_in,
                    "electrons_out": rg.electrons_out,
                    "miller": "".join(str(i) for i in cfg.slice.miller),
                    "height": int(img.shape[0]),
                    "width": int(img.shape[1]),
                    "extent_A": geom.extent,
                    "d_hkl_A": geom.d_hkl,
                    "offset": cfg.slice.offset,
                    "center_cart": json.dumps([round(float(c), 6) for c in geom.center]),
                    "t_regrid_s": t1 - t0,
                    "t_slice_s": t2 - t1,
                    "structure": dump_structure(rg.structure),
                    "image": img,
                    "lattice": rg.structure.lattice.matrix,
                }
            )
        ok = True
    finally:
        if writer is not None:
            writer.close(ok=ok)
    write_parquet(slices_table(rows, cfg.slice.size), slices_path)
    write_parquet(rejects_frame(rejects), rejects_path)
    summary = {
        "kind": kind,
        "n_ok": len(rows),
        "n_rejected": len(rejects),
        "mean_t_regrid_s": float(np.mean([r["t_regrid_s"] for r in rows])) if rows else None,
        "mean_t_slice_s": float(np.mean([r["t_slice_s"] for r in rows])) if rows else None,
    }
    log.info("density %s: %d images, %d rejected", kind, len(rows), len(rejects))
    return summary


def read_slices(path: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """``slices.parquet`` -> (metadata without the image, images (N, H, W) float32)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.drop_columns(["image"]).to_pandas()
    if table.num_rows == 0:
        return meta, np.zeros((0, 0, 0), np.float32)
    flat = table.column("image").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    h, w = int(meta["height"].iloc[0]), int(meta["width"].iloc[0])
    return meta, flat.reshape(len(meta), h, w)


def select_fcc_stable(entries: pd.DataFrame, cfg: SelectionConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper's selection: stable (E_hull <= ``e_hull_max``) cubic F-centred crystals with targets.

    Uses the canonical entries columns ``spacegroup_number`` and ``cfg.e_hull_column`` (falls back
    to a boolean ``is_stable`` column). Returns (kept entries, rejects with the reason per entry).
    Raises ``KeyError`` naming the column when neither stability column exists.
    """
    groups = set(cfg.spacegroups or FCC_SPACEGROUPS)
    if cfg.e_hull_column is None:
        log.warning("selection: e_hull_column is None: stability is NOT checked (space group and targets only)")
        stable = pd.Series(True, index=entries.index)
        stab_why = ""
    elif cfg.e_hull_column in entries.columns:
        stable = pd.to_numeric(entries[cfg.e_hull_column], errors="coerce") <= cfg.e_hull_max + 1e-12
        stab_why = f"{cfg.e_hull_column} > {cfg.e_hull_max} or unknown"
    elif "is_stable" in entries.columns:
        stable = entries["is_stable"].fillna(False).astype(bool)
        stab_why = "is_stable is false"
    else:
        raise KeyError(f"selection needs column {cfg.e_hull_column!r} or 'is_stable' (have {list(entries.columns)})")
    sg = pd.to_numeric(entries["spacegroup_number"], errors="coerce")
    fcc = sg.isin(groups)
    present = [t for t in cfg.targets if t in entries.columns]
    if not present:
        raise KeyError(f"none of the selection targets {cfg.targets} is a column of the entries table")
    known = entries[present].notna()
    has_t = known.all(axis=1) if cfg.require_all_targets else known.any(axis=1)
    if cfg.require_all_targets and len(present) < len(cfg.targets):
        has_t[:] = False
    keep = stable & fcc & has_t
    rejects = []
    for mid, s, f, t in zip(entries["material_id"].astype(str), stable, fcc, has_t):
        if s and f and t:
            continue
        why = []
        if not f:
            why.append("not a cubic F-centred space group")
        if not s:
            why.append(stab_why)
        if not t:
            why.append("missing targets")
        rejects.append({"material_id": mid, "stage": "density_select", "reason": "; ".join(why)})
    return entries[keep.to_numpy()].reset_index(drop=True), rejects_frame(rejects)


def select_stage(
    entries_path: str | Path,
    cfg: DensityConfig,
    out_path: str | Path,
    rejects_path: str | Path,
    splits_path: str | Path | None = None,
    split_cfg: Any = None,
) -> int:
    """Stage: entries.parquet -> selection.parquet (material_id + targets) and rejects; returns kept count.

    With ``splits_path`` (and ``split_cfg``, a :class:`matfuse.config.SplitConfig`) it also writes
    train/val/test splits over the selected ids (same seed and fractions as the main splits), so
    that every split of the ECD models holds selected materials.
    """
    entries = pd.read_parquet(entries_path)
    if cfg.selection.enabled:
        kept, rej = select_fcc_stable(entries, cfg.selection)
    else:
        kept, rej = entries, rejects_frame()
    cols = ["material_id"] + [c for c in cfg.selection.targets if c in kept.columns]
    write_parquet(kept[cols], out_path)
    write_parquet(rej, rejects_path)
    log.info("density selection: kept %d of %d entries", len(kept), len(entries))
    if splits_path is not None:
        from matfuse.split import make_splits

        ids = kept["material_id"].astype(str).tolist()
        groups = kept["structure_hash"].tolist() if "structure_hash" in kept.columns else None
        splits = make_splits(ids, split_cfg, groups)  # identical structures stay on one side
        payload = {
            **splits,
            "settings": split_cfg.model_dump(),
            "counts": {k: len(v) for k, v in splits.items()},
            "selection": {
                "enabled": cfg.selection.enabled,
                "stability_checked": cfg.selection.e_hull_column is not None,
                "e_hull_column": cfg.selection.e_hull_column,
                "e_hull_max": cfg.selection.e_hull_max,
                "spacegroups": list(cfg.selection.spacegroups or FCC_SPACEGROUPS),
            },
        }
        write_json(payload, splits_path)
        log.info("density splits over the selection: %s", payload["counts"])
    return len(kept)


def density_stage(
    dataset: str,
    kind: str,
    cfg: DensityConfig,
    out_dir: str | Path,
    ids_path: str | Path | None = None,
) -> dict[str, Any]:
    """Stage: the dataset's densities of ``kind`` into ``out_dir`` (files listed in the module doc).

    ``ids_path``: a Parquet with ``material_id`` (entries or selection); None = all the manifest lists.
    """
    if dataset not in cfg.datasets:
        raise KeyError(f"density.datasets has no entry {dataset!r}")
    ids = None
    if ids_path is not None:
        ids = pd.read_parquet(ids_path, columns=["material_id"])["material_id"].astype(str).tolist()
    out = Path(out_dir)
    summary = build_density_images(
        ids,
        cfg.datasets[dataset],
        kind,
        cfg,
        slices_path=out / "slices.parquet",
        rejects_path=out / "rejects.parquet",
        cubes_path=out / "cubes.npz" if cfg.store_cubes else None,
        preview_dir=out / "previews" if cfg.previews else None,
    )
    write_json({**summary, "dataset": dataset, "grid": list(cfg.grid), "slice": cfg.slice.model_dump()}, out / "summary.json")
    return summary
