# Generation branch (FlowLLM, Sriram et al. NeurIPS 2024): split tables -> crystal-text LM ->
# LM samples (lm row) and formula-conditioned pairs -> RFM from the LM base and from FlowMM's
# simple base (same net and epochs) -> Euler integration (flowllm, rfm_simple rows) + pyxtal and
# test rows -> metrics per method (matfuse.generate.evaluate) -> results/generation/metrics.csv,
# table.md and E_hull histograms. See docs/generation.md. Test entries enter no training step.
# File lists, input functions, params and resources come from the Plan (matfuse.workflow).

GEN = CFG.generation


if GEN is not None:

    rule gen_data:
        input:
            **W.generation_inputs(),
        output:
            train="results/generation/data/train.parquet",
            val="results/generation/data/val.parquet",
            test="results/generation/data/test.parquet",
        log:
            "logs/generation/data.log",
        params:
            cfg=W.generation_params("data"),
        resources:
            mem_mb=W.res("gen_data").mem_mb,
            runtime=W.res("gen_data").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_data.py"

    rule gen_train_lm:
        input:
            train="results/generation/data/train.parquet",
            val="results/generation/data/val.parquet",
        output:
            model="results/generation/lm/model.pt",
            summary="results/generation/lm/summary.json",
        log:
            "logs/generation/train_lm.log",
        benchmark:
            "benchmarks/generation/train_lm.tsv"
        params:
            cfg=W.generation_params("train_lm"),
        threads: W.res("gen_train_lm").threads
        resources:
            mem_mb=W.res("gen_train_lm").mem_mb,
            runtime=W.res("gen_train_lm").runtime_min,
            gpu=W.res("gen_train_lm").gpu,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_train_lm.py"

    rule gen_sample_lm:
        input:
            model="results/generation/lm/model.pt",
        output:
            samples="results/generation/samples/lm.parquet",
            summary="results/generation/samples/lm_summary.json",
        log:
            "logs/generation/sample_lm.log",
        benchmark:
            "benchmarks/generation/sample_lm.tsv"
        params:
            cfg=W.generation_params("sample_lm"),
        threads: W.res("gen_sample").threads
        resources:
            mem_mb=W.res("gen_sample").mem_mb,
            runtime=W.res("gen_sample").runtime_min,
            gpu=W.res("gen_sample").gpu,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_sample_lm.py"

    rule gen_pairs:
        input:
            model="results/generation/lm/model.pt",
            train="results/generation/data/train.parquet",
        output:
            pairs="results/generation/pairs/pairs.parquet",
            summary="results/generation/pairs/summary.json",
        log:
            "logs/generation/pairs.log",
        benchmark:
            "benchmarks/generation/pairs.tsv"
        params:
            cfg=W.generation_params("pairs"),
        threads: W.res("gen_sample").threads
        resources:
            mem_mb=W.res("gen_sample").mem_mb,
            runtime=W.res("gen_sample").runtime_min,
            gpu=W.res("gen_sample").gpu,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_pairs.py"

    rule gen_train_rfm:
        input:
            pairs="results/generation/pairs/pairs.parquet",
            train="results/generation/data/train.parquet",
        output:
            model="results/generation/rfm/{base}/model.pt",
            summary="results/generation/rfm/{base}/summary.json",
        log:
            "logs/generation/train_rfm_{base}.log",
        benchmark:
            "benchmarks/generation/train_rfm_{base}.tsv"
        wildcard_constraints:
            base="lm|simple",
        params:
            cfg=W.generation_params("train_rfm"),
        threads: W.res("gen_train_rfm").threads
        resources:
            mem_mb=W.res("gen_train_rfm").mem_mb,
            runtime=W.res("gen_train_rfm").runtime_min,
            gpu=W.res("gen_train_rfm").gpu,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_train_rfm.py"

    rule gen_integrate:
        input:
            model=lambda wc: f"results/generation/rfm/{W.GEN_FLOW_BASE[wc.method]}/model.pt",
            lm_samples="results/generation/samples/lm.parquet",
        output:
            samples="results/generation/samples/{method}.parquet",
            summary="results/generation/samples/{method}_summary.json",
        log:
            "logs/generation/integrate_{method}.log",
        benchmark:
            "benchmarks/generation/integrate_{method}.tsv"
        wildcard_constraints:
            method="flowllm|rfm_simple",
        params:
            cfg=W.generation_params("integrate"),
            base=lambda wc: W.GEN_FLOW_BASE[wc.method],
        threads: W.res("gen_integrate").threads
        resources:
            mem_mb=W.res("gen_integrate").mem_mb,
            runtime=W.res("gen_integrate").runtime_min,
            gpu=W.res("gen_integrate").gpu,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_integrate.py"

    rule gen_pyxtal:
        input:
            train="results/generation/data/train.parquet",
        output:
            samples="results/generation/samples/pyxtal.parquet",
        log:
            "logs/generation/pyxtal.log",
        benchmark:
            "benchmarks/generation/pyxtal.tsv"
        params:
            cfg=W.generation_params("pyxtal"),
        resources:
            mem_mb=W.res("gen_baseline").mem_mb,
            runtime=W.res("gen_baseline").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_pyxtal.py"

    rule gen_test_samples:
        input:
            test="results/generation/data/test.parquet",
        output:
            samples="results/generation/samples/test.parquet",
        log:
            "logs/generation/test_samples.log",
        params:
            cfg=W.generation_params("test"),
        resources:
            mem_mb=W.res("gen_baseline").mem_mb,
            runtime=W.res("gen_baseline").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_test_samples.py"

    # CHGNet energies of the training phases the LM-derived rows' samples need (one cache shared by
    # all evaluations, filled in `reference_shards` parallel jobs before those rows are evaluated;
    # test, pyxtal and calibration are evaluated while the LM trains and fill it themselves).
    rule gen_references:
        input:
            unpack(W.generation_reference_inputs),
        output:
            cost="results/generation/references/shard{shard}.json",
        log:
            "logs/generation/references_{shard}.log",
        benchmark:
            "benchmarks/generation/references_{shard}.tsv"
        params:
            cfg=W.generation_params("evaluate"),
            n_shards=GEN.reference_shards,
        threads: W.res("gen_evaluate").threads
        resources:
            mem_mb=W.res("gen_evaluate").mem_mb,
            runtime=W.res("gen_evaluate").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_references.py"

    rule gen_evaluate:
        input:
            samples="results/generation/samples/{method}.parquet",
            train="results/generation/data/train.parquet",
            test="results/generation/data/test.parquet",
            references=W.generation_reference_files,
        output:
            samples="results/generation/eval/{method}/samples.parquet",
            summary="results/generation/eval/{method}/summary.json",
        log:
            "logs/generation/evaluate_{method}.log",
        benchmark:
            "benchmarks/generation/evaluate_{method}.tsv"
        wildcard_constraints:
            method="|".join(W.generation_methods()),
        params:
            cfg=W.generation_params("evaluate"),
        threads: W.res("gen_evaluate").threads
        resources:
            mem_mb=W.res("gen_evaluate").mem_mb,
            runtime=W.res("gen_evaluate").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_evaluate.py"

    if GEN.calibration is not None:

        rule gen_calibration_subset:
            input:
                table=GEN.calibration,
            output:
                subset="results/generation/data/calibration.parquet",
            log:
                "logs/generation/calibration_subset.log",
            params:
                cfg=W.generation_params("calibration"),
            resources:
                mem_mb=W.res("gen_data").mem_mb,
                runtime=W.res("gen_data").runtime_min,
            conda:
                "../../envs/matfuse.yaml"
            script:
                "../scripts/gen_calibration_subset.py"

        rule gen_calibration:
            input:
                subset="results/generation/data/calibration.parquet",
                train="results/generation/data/train.parquet",
            output:
                samples="results/generation/eval/calibration/samples.parquet",
                summary="results/generation/eval/calibration/summary.json",
            log:
                "logs/generation/calibration.log",
            benchmark:
                "benchmarks/generation/calibration.tsv"
            params:
                cfg=W.generation_params("evaluate"),
            threads: W.res("gen_evaluate").threads
            resources:
                mem_mb=W.res("gen_evaluate").mem_mb,
                runtime=W.res("gen_evaluate").runtime_min,
            conda:
                "../../envs/matfuse.yaml"
            script:
                "../scripts/gen_calibration.py"

    rule gen_table:
        input:
            **W.generation_eval_files(),
        output:
            metrics="results/generation/metrics.csv",
            table="results/generation/table.md",
            hist_chgnet="results/generation/ehull_chgnet.png",
            hist_model="results/generation/ehull_model.png",
        log:
            "logs/generation/table.log",
        params:
            methods=W.generation_methods(),
        resources:
            mem_mb=W.res("gen_table").mem_mb,
            runtime=W.res("gen_table").runtime_min,
        conda:
            "../../envs/matfuse.yaml"
        script:
            "../scripts/gen_table.py"
