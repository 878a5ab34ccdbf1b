# CroMEL (composition encoder taught by a structure encoder) and the paper-style tables.


rule cromel:
    input:
        entries="results/data/{dataset}/entries.parquet",
        splits="results/splits/{dataset}/splits.json",
    output:
        metrics="results/cromel/{dataset}/seed{seed}/metrics.csv",
    log:
        "logs/cromel/{dataset}/seed{seed}.log",
    benchmark:
        "benchmarks/cromel/{dataset}/seed{seed}.tsv"
    params:
        # not the seeds list nor the dataset name (the wildcards): adding a seed runs only that seed
        cfg=lambda wc: CFG.cromel.model_dump(exclude={"seeds", "dataset"}) if CFG.cromel else None,
        seed=lambda wc: int(wc.seed),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=CFG.resources.train_runtime_min,
        gpu=CFG.resources.train_gpu,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/cromel.py"


rule tables:
    input:
        metrics="results/metrics.csv",
        cromel=cromel_files(),
    output:
        all=report("results/tables/all.md", caption="../report/tables.rst", category="Tables"),
        matmmfuse="results/tables/matmmfuse.md",
        crysmmnet="results/tables/crysmmnet.md",
        cromel="results/tables/cromel.md",
    log:
        "logs/tables.log",
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/tables.py"


localrules:
    tables,
