# Charge-density (ECD) branch (Massa et al., arXiv 2401.09301): optional labelling of local
# densities by structure matching -> stable-FCC selection and its splits -> pyrho regrid + (111)
# slices -> ecd_cnn / ecd_inception / ecd_text -> predictions (metrics rows) -> Table 6.
# Result names: ECD = "{dataset}-ecd_{kind}" (dataset names cannot contain '-'). See docs/density.md.

DENSITY = CFG.density
ECD = "{dataset}-ecd_{kind}"
ECD_EXP = ECD + "/{target}/{model}/{encoder}/{variant}/seed{seed}"
MATCH_DATASETS = list(DENSITY.match) if DENSITY is not None else []


def match_file(dataset, name):
    return f"results/density/{dataset}/match/{name}"


def _check_density_config():
    """Cross-references the typed config cannot check on its own (clear errors at parse time)."""
    if DENSITY is None:
        return
    for ds, src in DENSITY.datasets.items():
        if ds not in CFG.datasets:
            raise ValueError(f"density.datasets names {ds!r}, which is not a key of `datasets` (its entries give the targets)")
        if ds in DENSITY.match and src.kind == "local" and src.manifest != match_file(ds, "manifest.csv"):
            raise ValueError(f"density.datasets.{ds}.manifest must be {match_file(ds, 'manifest.csv')} (density.match.{ds} writes it)")
    for ds in DENSITY.match:
        src = CFG.datasets.get(ds)
        if src is None or src.source.kind != "table" or src.source.path != match_file(ds, "table.csv"):
            raise ValueError(f"density.match.{ds} needs datasets.{ds}.source = table with path {match_file(ds, 'table.csv')}")
    if "ecd_text" in DENSITY.models:
        for enc in DENSITY.encoders:
            if enc not in CFG.embeddings:
                raise ValueError(f"density.encoders names {enc!r}, which is not a key of `embeddings`")


_check_density_config()


def density_experiments():
    """Every (dataset, kind, target, model, encoder, variant, seed) the density section asks for."""
    if DENSITY is None:
        return []
    out = []
    for ds in DENSITY.datasets:
        for kind in DENSITY.kinds:
            for target in DENSITY.train_targets():
                for model in DENSITY.models:
                    if model == "ecd_text":
                        texts = [(e, v) for e in DENSITY.encoders for v in DENSITY.text_variants]
                    else:
                        texts = [(NONE, NONE)]
                    for enc, var in texts:
                        for seed in DENSITY.seeds:
                            out.append(dict(dataset=ds, kind=kind, target=target, model=model, encoder=enc, variant=var, seed=seed))
    return out


def density_prediction_files():
    """ECD prediction Parquets for the metrics rule (empty without a `density` section)."""
    return [f"results/predictions/{ECD_EXP}.parquet".format(**e) for e in density_experiments()]


def density_reject_files():
    """Rejects of the density stages (matching, selection, regrid/slice), for the rejects summary."""
    if DENSITY is None:
        return []
    files = [match_file(ds, "rejects.parquet") for ds in DENSITY.match]
    for ds in DENSITY.datasets:
        files.append(f"results/density/{ds}/selection_rejects.parquet")
        files += [f"results/density/{ECD}/rejects.parquet".format(dataset=ds, kind=k) for k in DENSITY.kinds]
    return files


def density_tables():
    return ["results/tables/massa_table6.md"] if DENSITY is not None else []


def density_ids(wildcards):
    """The densities to build: the selection (or every entry when selection is off)."""
    if DENSITY.selection.enabled:
        return f"results/density/{wildcards.dataset}/selection.parquet"
    return f"results/data/{wildcards.dataset}/entries.parquet"


def density_inputs(wildcards):
    inputs = {"ids": density_ids(wildcards)}
    src = DENSITY.datasets[wildcards.dataset]
    if src.kind == "local":
        inputs["manifest"] = src.manifest
    return inputs


def ecd_train_inputs(wildcards):
    inputs = {
        "slices": f"results/density/{ECD}/slices.parquet".format(dataset=wildcards.dataset, kind=wildcards.kind),
        "entries": f"results/data/{wildcards.dataset}/entries.parquet",
        "splits": f"results/density/{wildcards.dataset}/splits.json",
    }
    if wildcards.model == "ecd_text":
        inputs["embeddings"] = embedding_file(wildcards.dataset, wildcards.encoder, wildcards.variant)
    return inputs


DENSITY_KEY_VARS = sorted({s.api_key_env for s in DENSITY.datasets.values() if s.kind == "mp"}) if DENSITY else []
if DENSITY_KEY_VARS:

    envvars:
        *DENSITY_KEY_VARS,


if DENSITY is not None:

    wildcard_constraints:
        kind="total|spin|valence",

    rule density_match:
        output:
            table=match_file("{dataset}", "table.csv"),
            manifest=match_file("{dataset}", "manifest.csv"),
            rejects=match_file("{dataset}", "rejects.parquet"),
            summary=match_file("{dataset}", "summary.json"),
        log:
            "logs/density/match/{dataset}.log",
        params:
            match=lambda wc: DENSITY.match[wc.dataset].model_dump(),
        resources:
            mem_mb=4000,
            runtime=30,
        wildcard_constraints:
            dataset="|".join(MATCH_DATASETS) or "(?!x)x",
        script:
            "../scripts/density_match.py"

    # The matched table is a workflow output: ingest it with the table as a declared input.
    use rule ingest as density_ingest_matched with:
        input:
            table=match_file("{dataset}", "table.csv"),
        wildcard_constraints:
            dataset="|".join(MATCH_DATASETS) or "(?!x)x",

    ruleorder: density_ingest_matched > ingest

    rule density_select:
        input:
            entries="results/data/{dataset}/entries.parquet",
        output:
            selection="results/density/{dataset}/selection.parquet",
            rejects="results/density/{dataset}/selection_rejects.parquet",
            splits="results/density/{dataset}/splits.json",
        log:
            "logs/density/select/{dataset}.log",
        params:
            density=DENSITY.model_dump(),
            split=CFG.split.model_dump(),
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../scripts/density_select.py"

    rule density_images:
        input:
            unpack(density_inputs),
        output:
            slices="results/density/" + ECD + "/slices.parquet",
            rejects="results/density/" + ECD + "/rejects.parquet",
            summary="results/density/" + ECD + "/summary.json",
        log:
            "logs/density/images/" + ECD + ".log",
        benchmark:
            "benchmarks/density/images/" + ECD + ".tsv"
        params:
            density=DENSITY.model_dump(),
        resources:
            mem_mb=6000,
            runtime=240,
        script:
            "../scripts/density_images.py"

    rule density_train:
        input:
            unpack(ecd_train_inputs),
        output:
            checkpoint="results/models/" + ECD_EXP + "/model.pt",
            metrics="results/models/" + ECD_EXP + "/metrics.json",
            predictions="results/predictions/" + ECD_EXP + ".parquet",
        log:
            "logs/density/train/" + ECD_EXP + ".log",
        benchmark:
            "benchmarks/density/train/" + ECD_EXP + ".tsv"
        params:
            density=DENSITY.model_dump(),
        wildcard_constraints:
            model="ecd_cnn|ecd_inception|ecd_text",
        threads: CFG.resources.train_threads
        resources:
            mem_mb=CFG.resources.train_mem_mb,
            runtime=CFG.resources.train_runtime_min,
            gpu=CFG.resources.train_gpu,
        script:
            "../scripts/density_train.py"

    rule density_table6:
        input:
            metrics="results/metrics.csv",
            predictions=density_prediction_files(),
        output:
            table="results/tables/massa_table6.md",
        log:
            "logs/density/table6.log",
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            "../scripts/density_table.py"

    localrules:
        density_table6,
