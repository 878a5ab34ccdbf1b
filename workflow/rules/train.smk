# One training job per (dataset, target, model, encoder, variant, seed); GPU-capable.


rule train:
    input:
        unpack(W.model_inputs),
        splits="results/splits/{dataset}/splits.json",
    output:
        model="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}/model.pt",
        config="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}/config.json",
        history="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}/history.csv",
    log:
        "logs/train/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}.tsv"
    params:
        # only what changes this job's output: hyper-parameters, not the lists of models, targets,
        # datasets, encoders, variants or seeds (those are the wildcards; see training_params)
        training=W.training_params,
        graph=CFG.graph.model_dump(),
    threads: W.res("train").threads
    resources:
        mem_mb=W.res("train").mem_mb,
        runtime=W.res("train").runtime_min,
        gpu=W.res("train").gpu,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/train.py"
