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
    threads: CFG.resources.embed_threads
    resources:
        mem_mb=CFG.resources.embed_mem_mb,
        runtime=CFG.resources.embed_runtime_min,
        gpu=CFG.resources.embed_gpu,
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
        mem_mb=4000,
        runtime=60,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/graphs.py"
