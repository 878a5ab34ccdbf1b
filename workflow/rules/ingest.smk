# Ingest a source into the canonical entry table (+ rejects), then write the split manifest.


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        entries="results/data/{dataset}/entries.parquet",
        rejects="results/data/{dataset}/rejects.parquet",
    log:
        "logs/ingest/{dataset}.log",
    benchmark:
        "benchmarks/ingest/{dataset}.tsv"
    params:
        dataset_cfg=dataset_cfg,
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/ingest.py"


rule split:
    input:
        entries="results/data/{dataset}/entries.parquet",
    output:
        splits="results/splits/{dataset}/splits.json",
    log:
        "logs/split/{dataset}.log",
    params:
        split_cfg=CFG.split.model_dump(),
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/split.py"


rule jarvis_local_store:
    input:
        subset=lambda wc: JARVIS_STORES[wc.store_zip][0],
    output:
        store="{store_zip}",
    log:
        "logs/jarvis_store/{store_zip}.log",
    params:
        jarvis_dataset=lambda wc: JARVIS_STORES[wc.store_zip][1],
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/jarvis_store.py"
