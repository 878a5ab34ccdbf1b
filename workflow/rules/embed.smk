# Cached text embeddings (encoder x variant x pooling) and CGCNN graph inputs.


rule embed:
    input:
        texts="results/text/{dataset}/texts.parquet",
    output:
        embeddings="results/embeddings/{dataset}/{encoder}/{variant}-{pooling}.parquet",
        rejects="results/embeddings/{dataset}/{encoder}/{variant}-{pooling}.rejects.parquet",
    log:
        "logs/embed/{dataset}/{encoder}/{variant}-{pooling}.log",
    benchmark:
        "benchmarks/embed/{dataset}/{encoder}/{variant}-{pooling}.tsv"
    params:
        encoder_cfg=lambda wc: CFG.embeddings[wc.encoder].model_dump(),
        device=CFG.training.device,
    threads: W.res("embed").threads
    resources:
        mem_mb=W.res("embed").mem_mb,
        runtime=W.res("embed").runtime_min,
        gpu=W.res("embed").gpu,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/embed.py"


rule graphs:
    input:
        entries="results/data/{dataset}/entries.parquet",
    output:
        graphs="results/graphs/{dataset}/graphs.parquet",
        rejects="results/graphs/{dataset}/rejects.parquet",
    log:
        "logs/graphs/{dataset}.log",
    benchmark:
        "benchmarks/graphs/{dataset}.tsv"
    params:
        graph_cfg=CFG.graph.model_dump(),
    resources:
        mem_mb=W.res("graphs").mem_mb,
        runtime=W.res("graphs").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/graphs.py"
