# Predictions on the test split (and zero-shot sets), metrics table and parity plots.


rule predict:
    input:
        unpack(model_inputs),
        splits="results/splits/{dataset}/splits.json",
        model="results/models/" + EXP + "/model.pt",
    output:
        predictions="results/predictions/" + EXP + ".parquet",
    log:
        "logs/predict/" + EXP + ".log",
    params:
        device=CFG.training.device,
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=30,
        gpu=CFG.resources.train_gpu,
    script:
        "../scripts/predict.py"


rule metrics:
    input:
        predictions=prediction_files(),
        rejects=reject_files(),
    output:
        metrics="results/metrics.csv",
        rejects="results/rejects.csv",
        plots=parity_plots(),
    log:
        "logs/metrics.log",
    params:
        plots=CFG.evaluation.parity_plots,
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/metrics.py"


localrules:
    metrics,


rule predict_zeroshot:
    input:
        unpack(lambda wc: model_inputs(wc, dataset=wc.evalset)),
        model="results/models/" + EXP + "/model.pt",
    output:
        predictions="results/predictions/zeroshot/{evalset}/" + EXP + ".parquet",
    log:
        "logs/predict_zeroshot/{evalset}/" + EXP + ".log",
    params:
        device=CFG.training.device,
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=30,
        gpu=CFG.resources.train_gpu,
    script:
        "../scripts/predict.py"
