# Charge-density (ECD) branch (Massa et al., arXiv 2401.09301): optional labelling of local
# densities by structure matching -> stable-FCC selection and its splits -> pyrho regrid + (111)
# slices -> ecd_cnn / ecd_inception / ecd_text -> predictions (metrics rows) -> Table 6.
# Result names: "{dataset}-ecd_{kind}" (dataset names cannot contain '-'). See docs/density.md.
# File lists, input functions, params and resources come from the Plan (matfuse.workflow).

from matfuse import registry

DENSITY = CFG.density
DENSITY_MODELS = registry.names("density")


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
            match=W.density_match_params,
        resources:
            mem_mb=W.res("density_match").mem_mb,
            runtime=W.res("density_match").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/density_match.py"

    # The matched table is a workflow output: ingest it with the table as a declared input.
    use rule ingest as density_ingest_matched with:
        input:
            table="results/density/{dataset}/match/table.csv",
        wildcard_constraints:
            dataset="|".join(W.match_datasets()) or "(?!x)x",

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
            density=W.density_select_params,
            split=CFG.split.fractions(),
        resources:
            mem_mb=W.res("density_select").mem_mb,
            runtime=W.res("density_select").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/density_select.py"

    rule density_images:
        input:
            unpack(W.density_images_inputs),
        output:
            slices="results/density/{dataset}-ecd_{kind}/slices.parquet",
            rejects="results/density/{dataset}-ecd_{kind}/rejects.parquet",
            summary="results/density/{dataset}-ecd_{kind}/summary.json",
        log:
            "logs/density/images/{dataset}-ecd_{kind}.log",
        benchmark:
            "benchmarks/density/images/{dataset}-ecd_{kind}.tsv"
        params:
            density=W.density_images_params,
        resources:
            mem_mb=W.res("density_images").mem_mb,
            runtime=W.res("density_images").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/density_images.py"

    rule density_train:
        input:
            unpack(W.density_train_inputs),
        output:
            checkpoint="results/models/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}/model.pt",
            metrics="results/models/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}/metrics.json",
            predictions="results/predictions/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}.parquet",
        log:
            "logs/density/train/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}.log",
        benchmark:
            "benchmarks/density/train/{dataset}-ecd_{kind}/{target}/{model}/{encoder}/{variant}/seed{seed}.tsv"
        params:
            density=W.density_train_params,
        wildcard_constraints:
            model="|".join(DENSITY_MODELS),
        threads: W.res("density_train").threads
        resources:
            mem_mb=W.res("density_train").mem_mb,
            runtime=W.res("density_train").runtime_min,
            gpu=W.res("density_train").gpu,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/density_train.py"

    rule density_table6:
        input:
            metrics="results/metrics.csv",
            predictions=W.density_prediction_files(),
        output:
            table="results/tables/massa_table6.md",
        log:
            "logs/density/table6.log",
        resources:
            mem_mb=W.res("density_table6").mem_mb,
            runtime=W.res("density_table6").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/density_table.py"

    localrules:
        density_table6,
