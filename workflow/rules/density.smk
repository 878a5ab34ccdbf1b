# Charge-density (ECD) branch (Massa et al., arXiv 2401.09301): optional labelling of local
# densities by structure matching -> stable-FCC selection and its splits -> pyrho regrid + (111)
# slices -> ecd_cnn / ecd_inception / ecd_text -> predictions (metrics rows) -> Table 6.
# Result names: "{dataset}-ecd_{kind}" (dataset names cannot contain '-'). See docs/density.md.
# File lists and input functions live in matfuse.density.workflow.

from functools import partial

import matfuse.density.workflow as dwf

DENSITY = CFG.density
MATCH_DATASETS = list(DENSITY.match) if DENSITY is not None else []
DENSITY_KEY_VARS = sorted({s.api_key_env for s in DENSITY.datasets.values() if s.kind == "mp"}) if DENSITY else []
dwf.check_config(CFG)

# For the metrics rule (lazily, e.g. `predictions=lambda wc: prediction_files() + density_prediction_files()`).
density_prediction_files = partial(dwf.prediction_files, CFG)
density_reject_files = partial(dwf.reject_files, CFG)

if DENSITY_KEY_VARS:

    envvars:
        *DENSITY_KEY_VARS,


if DENSITY is not None:

    wildcard_constraints:
        kind="total|spin|valence",

    rule density_match:
        output:
            table="results/density/{dataset}/match/table.csv",
            manifest="results/density/{dataset}/match/manifest.csv",
            rejects="results/density/{dataset}/match/rejects.parquet",
            summary="results/density/{dataset}/match/summary.json",
        log:
            "logs/density/match/{dataset}.log",
        params:
            match=lambda wc: DENSITY.match[wc.dataset].model_dump(),
        resources:
            mem_mb=4000,
            runtime=30,
        wildcard_constraints:
            dataset="|".join(MATCH_DATASETS) or "(?!x)x",
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/density_match.py"

    # The matched table is a workflow output: ingest it with the table as a declared input.
    use rule ingest as density_ingest_matched with:
        input:
            table="results/density/{dataset}/match/table.csv",
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
            density=density_select_params,
            split=CFG.split.model_dump(),
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/density_select.py"

    rule density_images:
        input:
            unpack(partial(dwf.images_inputs, CFG)),
        output:
            slices="results/density/{dataset}-ecd_{kind}/slices.parquet",
            rejects="results/density/{dataset}-ecd_{kind}/rejects.parquet",
            summary="results/density/{dataset}-ecd_{kind}/summary.json",
        log:
            "logs/density/images/{dataset}-ecd_{kind}.log",
        benchmark:
            "benchmarks/density/images/{dataset}-ecd_{kind}.tsv"
        params:
            density=density_images_params,
        resources:
            mem_mb=6000,
            runtime=240,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/density_images.py"

    rule density_train:
        input:
            unpack(partial(dwf.train_inputs, CFG)),
        output:
            checkpoint="results/models/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}/model.pt",
            metrics="results/models/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}/metrics.json",
            predictions="results/predictions/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}.parquet",
        log:
            "logs/density/train/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}.log",
        benchmark:
            "benchmarks/density/train/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}.tsv"
        params:
            density=density_train_params,
        wildcard_constraints:
            model="ecd_cnn|ecd_inception|ecd_text",
        threads: CFG.resources.train_threads
        resources:
            mem_mb=CFG.resources.train_mem_mb,
            runtime=CFG.resources.train_runtime_min,
            gpu=CFG.resources.train_gpu,
        conda:
            "../../envs/matfuse.yaml"
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
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/density_table.py"

    localrules:
        density_table6,
