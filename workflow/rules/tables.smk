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
        cfg=W.cromel_params,
        seed=lambda wc: int(wc.seed),
    threads: W.res("cromel").threads
    resources:
        mem_mb=W.res("cromel").mem_mb,
        runtime=W.res("cromel").runtime_min,
        gpu=W.res("cromel").gpu,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/cromel.py"


rule tables:
    input:
        metrics="results/metrics.csv",
        cromel=W.cromel_files(),
    output:
        all=report("results/tables/all.md", caption="../report/tables.rst", category="Tables"),
        matmmfuse="results/tables/matmmfuse.md",
        crysmmnet="results/tables/crysmmnet.md",
        cromel="results/tables/cromel.md",
    log:
        "logs/tables.log",
    resources:
        mem_mb=W.res("tables").mem_mb,
        runtime=W.res("tables").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/tables.py"


localrules:
    tables,
