# Ingest a source into the canonical entry table (+ rejects), then write the split manifest.


rule ingest:
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
    script:
        "../scripts/split.py"
