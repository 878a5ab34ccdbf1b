# matfuse: crystal databases -> multimodal property-prediction results.
# Table of contents; each stage lives in workflow/rules/, all logic in src/matfuse/.

from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default; `--configfile other.yaml` replaces it (no silent merging of the two).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"



include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/density.smk"
include: "workflow/rules/generate.smk"


# What this config configures: metrics, and the tables of its branches (matfuse.workflow.Plan.final_targets).
rule all:
    input:
        W.final_targets(),
