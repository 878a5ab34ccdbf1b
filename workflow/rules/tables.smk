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


# The study report (evaluation.report: true; `make study` copies it to docs/results.md).
rule study_report:
    input:
        metrics="results/metrics.csv",
        splits=[f"results/splits/{ds}/splits.json" for ds in W.train_datasets],
        hull_checks=W.hull_checks(),
        parity=W.report_parity_plots(),
        predictions=W.prediction_files(),
    output:
        report="results/study/results.md",
        learning_curve="results/study/learning_curve.png",
    log:
        "logs/study_report.log",
    params:
        since_file="results/study/started",
        configfiles=[str(p) for p in workflow.config_settings.configfiles],
    resources:
        mem_mb=W.res("tables").mem_mb,
        runtime=W.res("tables").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/study_report.py"


localrules:
    study_report,
