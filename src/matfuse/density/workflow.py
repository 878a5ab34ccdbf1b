"""Helpers of ``workflow/rules/density.smk``: the file lists and rule inputs of the ECD branch.

Kept here (not in the .smk) so the rules file holds only rules; every function takes the typed
:class:`matfuse.config.Config` (``cfg``) explicitly.
"""

from __future__ import annotations

from typing import Any

NONE = "none"
#: ``{dataset}-ecd_{kind}``: an ECD dataset in result paths and in metrics.csv.
ECD = "{dataset}-ecd_{kind}"
ECD_EXP = "{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}"


def match_file(dataset: str, name: str) -> str:
    """Outputs of the structure-matching stage of ``dataset``."""
    return f"results/density/{dataset}/match/{name}"


def check_config(cfg: Any) -> None:
    """Cross-references the typed sections cannot check alone; raises ``ValueError`` saying what to fix."""
    d = cfg.density
    if d is None:
        return
    for ds, src in d.datasets.items():
        if ds not in cfg.datasets:
            raise ValueError(f"density.datasets names {ds!r}, which is not a key of `datasets` (its entries give the targets)")
        if ds in d.match and src.kind == "local" and src.manifest != match_file(ds, "manifest.csv"):
            raise ValueError(f"density.datasets.{ds}.manifest must be {match_file(ds, 'manifest.csv')} (density.match.{ds} writes it)")
    for ds in d.match:
        dcfg = cfg.datasets.get(ds)
        if dcfg is None or dcfg.source.kind != "table" or dcfg.source.path != match_file(ds, "table.csv"):
            raise ValueError(f"density.match.{ds} needs datasets.{ds}.source = table with path {match_file(ds, 'table.csv')}")
    if "ecd_text" in d.models:
        for enc in d.encoders:
            if enc not in cfg.embeddings:
                raise ValueError(f"density.encoders names {enc!r}, which is not a key of `embeddings`")


def experiments(cfg: Any) -> list[dict[str, Any]]:
    """Every (dataset, kind, target, model, encoder, variant, seed) the density section asks for."""
    d = cfg.density
    if d is None:
        return []
    out = []
    for ds in d.datasets:
        for kind in d.kinds:
            for target in d.train_targets():
                for model in d.models:
                    texts = [(e, v) for e in d.encoders for v in d.text_variants] if model == "ecd_text" else [(NONE, NONE)]
                    for enc, var in texts:
                        for seed in d.seeds:
                            out.append(dict(dataset=ds, kind=kind, target=target, model=model, encoder=enc, variant=var, seed=seed))
    return out


def prediction_files(cfg: Any) -> list[str]:
    """ECD prediction Parquets (inputs of the metrics rule); empty without a density section."""
    return [f"results/predictions/{ECD_EXP}.parquet".format(**e) for e in experiments(cfg)]


def reject_files(cfg: Any) -> list[str]:
    """Rejects of matching, selection and regrid/slice (second path segment = the dataset name)."""
    d = cfg.density
    if d is None:
        return []
    files = [match_file(ds, "rejects.parquet") for ds in d.match]
    for ds in d.datasets:
        files.append(f"results/density/{ds}/selection_rejects.parquet")
        files += [f"results/density/{ECD}/rejects.parquet".format(dataset=ds, kind=k) for k in d.kinds]
    return files


def images_inputs(cfg: Any, wildcards: Any) -> dict[str, str]:
    """Inputs of density_images: the ids to build (selection, or all entries) and a local manifest."""
    d = cfg.density
    ds = wildcards.dataset
    ids = f"results/density/{ds}/selection.parquet" if d.selection.enabled else f"results/data/{ds}/entries.parquet"
    inputs = {"ids": ids}
    src = d.datasets[ds]
    if src.kind == "local":
        inputs["manifest"] = src.manifest
    return inputs


def train_inputs(cfg: Any, wildcards: Any) -> dict[str, str]:
    """Inputs of density_train (text embeddings only for ecd_text)."""
    ds = wildcards.dataset
    inputs = {
        "slices": f"results/density/{ECD}/slices.parquet".format(dataset=ds, kind=wildcards.kind),
        "entries": f"results/data/{ds}/entries.parquet",
        "splits": f"results/density/{ds}/splits.json",
    }
    if wildcards.model == "ecd_text":
        pooling = cfg.embeddings[wildcards.encoder].pooling
        inputs["embeddings"] = f"results/embeddings/{ds}/{wildcards.encoder}/{wildcards.variant}-{pooling}.parquet"
    return inputs


__all__ = [
    "ECD", "ECD_EXP", "check_config", "experiments", "images_inputs", "match_file", "prediction_files",
    "reject_files", "train_inputs",
]
