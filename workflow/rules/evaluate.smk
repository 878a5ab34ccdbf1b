# Predictions on the test split (and zero-shot sets), metrics table and parity plots.


rule predict:
    input:
        unpack(W.model_inputs),
        splits="results/splits/{dataset}/splits.json",
        model="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}/model.pt",
    output:
        predictions="results/predictions/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}.parquet",
    log:
        "logs/predict/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}.log",
    benchmark:
        "benchmarks/predict/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}.tsv"
    params:
        device=CFG.training.device,
    threads: W.res("predict").threads
    resources:
        mem_mb=W.res("predict").mem_mb,
        runtime=W.res("predict").runtime_min,
        gpu=W.res("predict").gpu,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/predict.py"


# The experiment set of the config (results/experiments.json): re-run whenever it changes (params),
# and with it `metrics`, so metrics.csv always follows the config (see matfuse.workflow.Plan.experiment_manifest).
rule experiments:
    output:
        manifest="results/experiments.json",
    log:
        "logs/experiments.log",
    params:
        manifest=lambda wc: W.experiment_manifest(),
    resources:
        mem_mb=W.res("experiments").mem_mb,
        runtime=W.res("experiments").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/experiments.py"


rule metrics:
    input:
        experiments="results/experiments.json",
        predictions=W.all_prediction_files(),
        rejects=W.all_reject_files(),
    output:
        metrics=report("results/metrics.csv", caption="../report/metrics.rst", category="Metrics"),
        rejects="results/rejects.csv",
        plots=[report(p, caption="../report/parity.rst", category="Parity plots") for p in W.parity_plots()],
    log:
        "logs/metrics.log",
    params:
        plots=CFG.evaluation.parity_plots,
        positive_only=CFG.evaluation.positive_only,
    resources:
        mem_mb=W.res("metrics").mem_mb,
        runtime=W.res("metrics").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/metrics.py"


localrules:
    experiments,
    metrics,


rule predict_zeroshot:
    input:
        unpack(W.zeroshot_inputs),
        model="results/models/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}/model.pt",
    output:
        predictions="results/predictions/zeroshot/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}.parquet",
    log:
        "logs/predict_zeroshot/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}.log",
    params:
        evalsets=lambda wc: W.zeroshot_sets(wc.dataset, wc.target),
        device=CFG.training.device,
    threads: W.res("predict_zeroshot").threads
    resources:
        mem_mb=W.res("predict_zeroshot").mem_mb,
        runtime=W.res("predict_zeroshot").runtime_min,
        gpu=W.res("predict_zeroshot").gpu,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/predict_zeroshot.py"


# Seed ensembles (mean and std over the seeds of one experiment): uncertainty per prediction.
rule ensemble:
    input:
        predictions=W.seed_files,
    output:
        ensemble="results/predictions/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}ensemble.parquet",
    log:
        "logs/ensemble/{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}ensemble.log",
    resources:
        mem_mb=W.res("ensemble").mem_mb,
        runtime=W.res("ensemble").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/ensemble.py"


# Matbench results files (evaluation.matbench): one per model, every fold, seed-ensemble mean and std.
rule matbench_record:
    input:
        splits="results/splits/{dataset}/splits.json",
        predictions=W.matbench_prediction_files,
    output:
        record="results/matbench/{dataset}/{target}/{model}/{encoder}/{variant}/results.json.gz",
    log:
        "logs/matbench/{dataset}/{target}/{model}/{encoder}/{variant}.log",
    params:
        task=lambda wc: CFG.evaluation.matbench[wc.dataset].task,
        training=W.training_params,
    resources:
        mem_mb=W.res("matbench").mem_mb,
        runtime=W.res("matbench").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/matbench_record.py"


rule matbench_summary:
    input:
        records=lambda wc: [r for r in W.matbench_records() if r.startswith(f"results/matbench/{wc.dataset}/")],
    output:
        summary="results/matbench/{dataset}/summary.md",
    log:
        "logs/matbench/{dataset}/summary.log",
    params:
        task=lambda wc: CFG.evaluation.matbench[wc.dataset].task,
    resources:
        mem_mb=W.res("matbench").mem_mb,
        runtime=W.res("matbench").runtime_min,
    conda:
        "../../envs/matfuse.yaml"
    script:
        "../scripts/matbench_summary.py"


localrules:
    ensemble,
    matbench_record,
    matbench_summary,
