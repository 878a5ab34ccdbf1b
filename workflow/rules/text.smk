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
        text_cfg=W.text_params(),
    threads: W.res("describe").threads
    resources:
        mem_mb=W.res("describe").mem_mb,
        runtime=W.res("describe").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/describe.py"


rule merge_texts:
    input:
        unpack(W.descriptions_inputs),
        shards=expand("results/text/{{dataset}}/shards/{shard}.parquet", shard=W.shards),
    output:
        texts="results/text/{dataset}/texts.parquet",
        rejects="results/text/{dataset}/rejects.parquet",
    log:
        "logs/merge_texts/{dataset}.log",
    params:
        descriptions=W.descriptions_params,
    resources:
        mem_mb=W.res("merge_texts").mem_mb,
        runtime=W.res("merge_texts").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/merge_texts.py"
