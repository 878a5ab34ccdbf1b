# matfuse: crystal databases -> multimodal property-prediction results.
# Table of contents; each stage lives in workflow/rules/, all logic in src/matfuse/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        "results/metrics.csv",
