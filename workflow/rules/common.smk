# Configuration: validation against the generated schema, the typed config, and the one Plan
# (matfuse.workflow) that every rule takes its paths, inputs, params and resources from.

import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from matfuse.config import load_config
from matfuse.workflow import Plan

# Defaults come from the typed config (set_default would merge every source kind's defaults).
validate(config, schema="../schemas/config.schema.json", set_default=False)
# Every cross-reference check lives in the typed config (matfuse.config.Config validators).
CFG = load_config(config)
W = Plan(CFG)

# Offline by default: Hugging Face loads only from local paths/caches unless the user says otherwise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Fail fast where the DAG is built (not again inside every job of a cluster run): text encoders
# that are not on this machine (no weights are loaded; hub names: local cache only).
if workflow.is_main_process:
    ENCODER_PROBLEMS = W.encoder_problems()
    if ENCODER_PROBLEMS:
        raise WorkflowError("text encoder not available:\n" + "\n".join(ENCODER_PROBLEMS))

# Materials Project keys are passed through to jobs (also cluster jobs) only when a source uses
# them; they are never written to logs or outputs.
if W.mp_key_vars():

    envvars:
        *W.mp_key_vars(),



wildcard_constraints:
    dataset="|".join(W.datasets),
    shard=r"\d+",
    encoder=r"[A-Za-z0-9_.]+",
    variant="all|key|single|none",
    pooling="cls|mean",
    target=r"[A-Za-z0-9_]+",
    model=r"[A-Za-z0-9_]+",
    seed=r"\d+",
    fold=r"(fold\d+-)?",
    size=r"(n\d+-)?",
    store_zip=W.store_zip_pattern(),
