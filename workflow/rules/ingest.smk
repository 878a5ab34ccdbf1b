# Ingest a source into the canonical entry table (+ rejects), then write the split manifest.


rule ingest:
    input:
        unpack(W.ingest_inputs),
    output:
        entries="results/data/{dataset}/entries.parquet",
        rejects="results/data/{dataset}/rejects.parquet",
    log:
        "logs/ingest/{dataset}.log",
    benchmark:
        "benchmarks/ingest/{dataset}.tsv"
    params:
        dataset_cfg=W.dataset_params,
    threads: W.res("ingest").threads
    resources:
        mem_mb=W.res("ingest").mem_mb,
        runtime=W.res("ingest").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/ingest.py"


rule split:
    input:
        unpack(W.split_inputs),
    output:
        splits="results/splits/{dataset}/splits.json",
    log:
        "logs/split/{dataset}.log",
    params:
        split_cfg=W.split_params,
    resources:
        mem_mb=W.res("split").mem_mb,
        runtime=W.res("split").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/split.py"


rule jarvis_local_store:
    input:
        subset=lambda wc: W.jarvis_stores()[wc.store_zip][0],
    output:
        store="{store_zip}",
    log:
        "logs/jarvis_store/{store_zip}.log",
    params:
        jarvis_dataset=lambda wc: W.jarvis_stores()[wc.store_zip][1],
    resources:
        mem_mb=W.res("jarvis_store").mem_mb,
        runtime=W.res("jarvis_store").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/jarvis_store.py"


# e_above_hull of a table's whole collection (datasets.<name>.hull): an extra target of the ingest.
rule hull:
    input:
        table=lambda wc: CFG.datasets[wc.dataset].source.path,
    output:
        hull="results/hull/{dataset}/e_above_hull.parquet",
        check="results/hull/{dataset}/check.json",
    log:
        "logs/hull/{dataset}.log",
    benchmark:
        "benchmarks/hull/{dataset}.tsv"
    params:
        cfg=W.hull_params,
    resources:
        mem_mb=W.res("hull").mem_mb,
        runtime=W.res("hull").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/hull.py"
