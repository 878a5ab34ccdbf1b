# Ingest a source into the canonical entry table (+ rejects), then write the split manifest.


import re

from matfuse.sources.jarvis import store_zip_path

# JARVIS figshare zips packed from local record files: {zip path: records file}.
JARVIS_STORES = {
    str(store_zip_path(ds.source.store_dir, ds.source.dataset)): (ds.source.local_subset, ds.source.dataset)
    for ds in CFG.datasets.values()
    if ds.source.kind == "jarvis" and ds.source.local_subset
}


def ingest_inputs(wildcards):
    src = CFG.datasets[wildcards.dataset].source
    if src.kind == "jarvis" and src.local_subset:
        return {"store": str(store_zip_path(src.store_dir, src.dataset))}
    return {}


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
    script:
        "../scripts/jarvis_store.py"


wildcard_constraints:
    store_zip="|".join(re.escape(p) for p in JARVIS_STORES) or "(?!x)x",
