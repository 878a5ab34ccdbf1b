# One training job per (dataset, target, model, encoder, variant, seed); GPU-capable.


rule train:
    input:
        unpack(model_inputs),
        splits="results/splits/{dataset}/splits.json",
    output:
        model="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}/model.pt",
        config="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}/config.json",
        history="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}/history.csv",
    log:
        "logs/train/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}.tsv"
    params:
        # only what changes this job's output: hyper-parameters, not the lists of models, targets,
        # datasets, encoders, variants or seeds (those are the wildcards; see training_params)
        training=training_params(),
        graph=CFG.graph.model_dump(),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=CFG.resources.train_runtime_min,
        gpu=CFG.resources.train_gpu,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/train.py"
