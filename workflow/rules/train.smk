# One training job per (dataset, target, model, encoder, variant, seed); GPU-capable.


rule train:
    input:
        unpack(model_inputs),
        splits="results/splits/{dataset}/splits.json",
    output:
        model="results/models/" + EXP + "/model.pt",
        config="results/models/" + EXP + "/config.json",
        history="results/models/" + EXP + "/history.csv",
    log:
        "logs/train/" + EXP + ".log",
    benchmark:
        "benchmarks/train/" + EXP + ".tsv"
    params:
        training=CFG.training.model_dump(),
        graph=CFG.graph.model_dump(),
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=CFG.resources.train_runtime_min,
        gpu=CFG.resources.train_gpu,
    script:
        "../scripts/train.py"
