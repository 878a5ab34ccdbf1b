# Predictions on the test split (and zero-shot sets), metrics table and parity plots.


rule predict:
    input:
        unpack(model_inputs),
        splits="results/splits/{dataset}/splits.json",
        model="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}/model.pt",
    output:
        predictions="results/predictions/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}.parquet",
    log:
        "logs/predict/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}.log",
    params:
        device=CFG.training.device,
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=30,
        gpu=CFG.resources.train_gpu,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/predict.py"


# The experiment set of the config (results/experiments.json): re-run whenever it changes (params),
# and with it `metrics`, so metrics.csv always follows the config (see experiment_manifest).
rule experiments:
    output:
        manifest="results/experiments.json",
    log:
        "logs/experiments.log",
    params:
        # lambda: density.smk (included later) adds the charge-density experiments
        manifest=lambda wc: experiment_manifest(),
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/experiments.py"


rule metrics:
    input:
        experiments="results/experiments.json",
        # lambdas: density.smk (included later) adds the charge-density results
        predictions=lambda wc: prediction_files() + density_prediction_files(),
        rejects=lambda wc: reject_files() + density_reject_files(),
    output:
        metrics=report("results/metrics.csv", caption="../report/metrics.rst", category="Metrics"),
        rejects="results/rejects.csv",
        plots=[report(p, caption="../report/parity.rst", category="Parity plots") for p in parity_plots()],
    log:
        "logs/metrics.log",
    params:
        plots=CFG.evaluation.parity_plots,
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/metrics.py"


localrules:
    experiments,
    metrics,


rule predict_zeroshot:
    input:
        unpack(zeroshot_inputs),
        model="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}/model.pt",
    output:
        predictions="results/predictions/zeroshot/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}.parquet",
    log:
        "logs/predict_zeroshot/{dataset}/{target}/{model}/{encoder}/{variant}/seed{seed}.log",
    params:
        evalsets=lambda wc: sorted(zeroshot_sets(wc.dataset, wc.target)),
        device=CFG.training.device,
    threads: CFG.resources.train_threads
    resources:
        mem_mb=CFG.resources.train_mem_mb,
        runtime=30,
        gpu=CFG.resources.train_gpu,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/predict_zeroshot.py"
