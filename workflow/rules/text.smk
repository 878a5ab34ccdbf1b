# Robocrystallographer descriptions (all / key / single), sharded, cached per structure.


rule describe:
    input:
        entries="results/data/{dataset}/entries.parquet",
    output:
        shard="results/text/{dataset}/shards/{shard}.parquet",
    log:
        "logs/describe/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/describe/{dataset}/{shard}.tsv"
    params:
        n_shards=CFG.text.n_shards,
        # every shard holds all three variants: text.variants does not change it
        text_cfg=CFG.text.model_dump(exclude={"variants"}),
    threads: CFG.resources.describe_threads
    resources:
        mem_mb=CFG.resources.describe_mem_mb,
        runtime=CFG.resources.describe_runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/describe.py"


rule merge_texts:
    input:
        shards=expand("results/text/{{dataset}}/shards/{shard}.parquet", shard=SHARDS),
    output:
        texts="results/text/{dataset}/texts.parquet",
        rejects="results/text/{dataset}/rejects.parquet",
    log:
        "logs/merge_texts/{dataset}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/merge_texts.py"
