"""Snakemake adapter: zero-shot predictions of one trained model (see matfuse.zeroshot)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from matfuse.io import setup_logging  # noqa: E402
from matfuse.zeroshot import predict_zeroshot  # noqa: E402

smk = snakemake  # noqa: F821
setup_logging(smk.log[0])
torch.set_num_threads(max(1, int(smk.threads)))
evalsets = {
    name: {kind: smk.input.get(f"{name}__{kind}") for kind in ("entries", "graphs", "embeddings", "texts")}
    for name in smk.params.evalsets
}
predict_zeroshot(Path(smk.input.model).parent, evalsets, smk.output.predictions, device=smk.params.device,
                 variant=smk.wildcards.variant)
