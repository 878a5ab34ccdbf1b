"""The one model registry (torch-free: importing it costs nothing).

Each model is named once here, with what it reads (``graph`` / ``text`` / ``image`` /
``composition``), which family trains it, where its class and typed constructor config live,
and a one-line summary. Everything else derives from it: the config's model names
(:mod:`matfuse.config`), the Snakemake rules' inputs (``workflow/rules/common.smk``), model
construction and checkpoint loading (:mod:`matfuse.models`), and the README's model table
(``python -m matfuse.registry`` prints it; a test keeps the README in step).

Families:

* ``crystal`` — trained by :func:`matfuse.train.train_model` on crystal graphs and/or cached text
  embeddings; selectable in ``training.models``;
* ``density`` — charge-density image models, trained by :mod:`matfuse.density.train`;
  selectable in ``density.models``;
* ``cromel`` — the CroMEL encoders and regressors (:mod:`matfuse.cromel`), not selectable;
* ``generative`` — FlowLLM's crystal generators (:mod:`matfuse.generate`): the crystal-text
  language model and the Riemannian flow-matching network; trained by the generation branch
  (``generation:`` in the config), not selectable in ``training.models`` and not in the README's
  property-model table.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

Family = Literal["crystal", "density", "cromel", "generative"]
Input = Literal["graph", "text", "tokens", "image", "composition", "structure"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: Family
    inputs: frozenset[str]
    factory: str  # "module:attribute" of the callable that builds it from constructor kwargs
    summary: str
    config: str | None = None  # "module:Class" of its typed constructor config, where it has one
    #: constructor keys naming pretrained-weight files: dropped when a checkpoint is loaded
    #: (its state dict holds the weights; the file may not exist on the loading machine)
    weight_files: tuple[str, ...] = ()
    #: the published training recipe of this model (training-section keys over the config's;
    #: ``hyper`` keys over its hyper-parameters): see :meth:`matfuse.config.TrainingConfig.for_model`
    recipe: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Callable[..., Any]:
        module, attr = self.factory.split(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):  # "Class.classmethod" allowed
            obj = getattr(obj, part)
        return obj


def _spec(name: str, family: Family, inputs: set[str], factory: str, summary: str, **kw: Any) -> ModelSpec:
    return ModelSpec(name, family, frozenset(inputs), factory, summary, **kw)


#: ALIGNN's training recipe (usnistgov/alignn train.py and the CrysMMNet config.json): AdamW
#: lr 1e-3, weight decay 1e-5, OneCycleLR stepped per batch with pct_start 0.3, batch 64, MSE loss.
ALIGNN_RECIPE: dict[str, Any] = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-5, "schedule": "onecycle",
                                 "warmup": 0.3, "batch_size": 64}

SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _spec("cgcnn", "crystal", {"graph"}, "matfuse.models.cgcnn:CGCNN",
              "Xie & Grossman crystal graph convolution (radius 8 Å, 12 neighbours, Gaussian distances)",
              config="matfuse.models.cgcnn:CGCNNConfig"),
        _spec("cgcnn_paper", "crystal", {"graph"}, "matfuse.models.cgcnn:CGCNN",
              "CGCNN with the paper's recipe (txie-93/cgcnn checkpoints): n_conv 4, h_fea_len 32, atom_fea_len 64; "
              "SGD momentum 0.9, lr 0.02 (band gap 0.05), batch 256, lr × 0.1 at 80 % of the epochs (MultiStepLR); "
              "CGCNN's 92-wide atom_init.json; epochs from the config (the paper: 1,000)",
              config="matfuse.models.cgcnn:CGCNNConfig",
              recipe={"optimizer": "sgd", "momentum": 0.9, "lr": 0.02, "lr_by_target": {"band_gap": 0.05},
                      "weight_decay": 0.0, "batch_size": 256, "schedule": "multistep", "milestones": [0.8],
                      "gamma": 0.1, "hyper": {"n_conv": 4, "h_fea_len": 32, "atom_fea_len": 64, "atom_features": "cgcnn"}}),
        _spec("text", "crystal", {"text"}, "matfuse.models.text_mlp:TextMLP",
              "frozen cached text embedding → MLP"),
        _spec("text_finetune", "crystal", {"tokens"}, "matfuse.models.text_finetune:TextFinetune",
              "the papers' fine-tuned text baseline (\"SciBERT\" row): the encoder fine-tuned with a regression head "
              "on its pooler output; recipe AdamW lr 2e-5, weight decay 0.01, batch 16, 10 epochs, linear warm-up 10 % "
              "then cosine",
              config="matfuse.models.text_finetune:TextFinetuneConfig", weight_files=("text.weights",),
              recipe={"optimizer": "adamw", "lr": 2e-5, "weight_decay": 0.01, "batch_size": 16, "epochs": 10,
                      "schedule": "cosine", "warmup": 0.1, "hyper": {"text_pooling": "pooler"}}),
        _spec("matmmfuse", "crystal", {"graph", "tokens"}, "matfuse.models.matmmfuse:MatMMFuseE2E",
              "MatMMFuse as published: the text encoder fine-tuned end to end with MatDeepLearn's CGCNN (pre-FC 100, "
              "4 CGConv + BatchNorm, post-FC 150 × 3) and the fusion block (both inputs projected to 512 and "
              "LayerNorm-ed by one LayerNorm, 8-head attention with query text, attention dropout 0.2, "
              "norm2(out + text), linear head), unmasked mean pooling; recipe AdamW lr 1e-5, weight decay 0.01, "
              "batch 8, 11 epochs, cosine with 10 % linear warm-up per batch; selection on validation (the "
              "authors take the last epoch)",
              config="matfuse.models.matmmfuse:MatMMFuseE2EConfig", weight_files=("text.weights",),
              recipe={"optimizer": "adamw", "lr": 1e-5, "weight_decay": 0.01, "batch_size": 8, "epochs": 11,
                      "schedule": "cosine", "warmup": 0.1,
                      "hyper": {"backbone": "mdl_cgcnn", "text_pooling": "mean_unmasked", "attn_dropout": 0.2}}),
        _spec("matmmfuse_frozen", "crystal", {"graph", "text"}, "matfuse.models.matmmfuse:matmmfuse_frozen",
              "our fast CPU variant of MatMMFuse: its fusion block on *frozen cached* text embeddings with our CGCNN: "
              "both projected to 512, 8-head attention (query text, key/value graph), residual + LayerNorm, linear "
              "head. With one token per modality the attention softmax is identically 1 (the block reduces to a "
              "learned projection of the graph vector)"),
        _spec("matmmfuse_tokens", "crystal", {"graph", "text"}, "matfuse.models.matmmfuse:matmmfuse_tokens",
              "same, attending over the graph's atom tokens"),
        _spec("crysmmnet", "crystal", {"graph", "text"}, "matfuse.models.crysmmnet:CrysMMNet",
              "CrysMMNet: graph and text projection heads (Linear-GELU-Linear-Dropout, residual + LayerNorm) "
              "to 64 each, concatenated → 64 → 1"),
        _spec("alignn", "crystal", {"graph"}, "matfuse.models.alignn:ALIGNN",
              "ALIGNN (Choudhary & DeCost 2021), our PyG re-implementation: atom graph + line graph of bond "
              "angles, 4 ALIGNN + 4 edge-gated layers, hidden 256, 80 distance / 40 angle RBFs, mean pooling; "
              "CGCNN's atom_init.json; ALIGNN's recipe: AdamW lr 1e-3, weight decay 1e-5, OneCycle "
              "(30 % warm-up), batch 64",
              config="matfuse.models.alignn:ALIGNNConfig", recipe=ALIGNN_RECIPE),
        _spec("crysmmnet_alignn", "crystal", {"graph", "text"}, "matfuse.models.crysmmnet:crysmmnet_alignn",
              "CrysMMNet as published (kdmsit/crysmmnet): the ALIGNN backbone, projection heads to 64 each, "
              "concatenated → 64 → ReLU → 1; ALIGNN's recipe (AdamW lr 1e-3, weight decay 1e-5, OneCycle, batch 64)",
              config="matfuse.models.crysmmnet:CrysMMNetConfig", recipe=ALIGNN_RECIPE),
        _spec("ecd_cnn", "density", {"image"}, "matfuse.models.ecd_cnn:EcdCNN.from_kwargs",
              "Massa et al.'s CNN on the (111) charge-density slice; see `docs/density.md`",
              config="matfuse.models.ecd_cnn:EcdCNNConfig"),
        _spec("ecd_inception", "density", {"image"}, "matfuse.models.ecd_inception:EcdInception.from_kwargs",
              "InceptionV3 on the slice (ImageNet weights where a local file is given)",
              config="matfuse.models.ecd_inception:EcdInceptionConfig", weight_files=("weights_path",)),
        _spec("ecd_text", "density", {"image", "text"}, "matfuse.models.ecd_text:EcdText.from_kwargs",
              "slice CNN + text embedding, concatenated",
              config="matfuse.models.ecd_text:EcdTextConfig", weight_files=("image_cfg.weights_path",)),
        _spec("cromel_composition", "cromel", {"composition"}, "matfuse.models.composition:CompositionRegressor.from_kwargs",
              "composition encoder + regression head (CroMEL's target model)"),
        _spec("cromel_encoder", "cromel", {"composition"}, "matfuse.models.composition:CompositionEncoder",
              "composition encoder aligned to a structure encoder (WGAN-GP critic)"),
        _spec("cromel_structure", "cromel", {"graph"}, "matfuse.models.cromel:StructureRegressor.from_kwargs",
              "CroMEL's source structure encoder + head"),
        _spec("flowllm_lm", "generative", {"structure"}, "matfuse.generate.lm:CrystalLM",
              "FlowLLM's base distribution: GPT-2 (transformers, from scratch) over crystal text, one token per "
              "digit/sign/point/element; unconditional and formula-conditioned sampling"),
        _spec("flowllm_rfm", "generative", {"structure"}, "matfuse.generate.rfm:CrystalFlow",
              "FlowLLM's Riemannian flow matching on fractional coordinates (flat torus) × lattice parameters, "
              "DiffCSP CSPNet-style periodic message passing (PyG)"),
    )
}


def spec(name: str) -> ModelSpec:
    """The spec of model ``name``; ``ValueError`` naming the known models otherwise."""
    if name not in SPECS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(SPECS)}")
    return SPECS[name]


def names(family: Family | None = None, uses: str | None = None) -> tuple[str, ...]:
    """Model names (registry order), optionally of one family and/or reading one input."""
    return tuple(
        n for n, s in SPECS.items() if (family is None or s.family == family) and (uses is None or uses in s.inputs)
    )


def inputs(name: str) -> frozenset[str]:
    return spec(name).inputs


def markdown_table(families: tuple[Family, ...] = ("crystal", "density")) -> str:
    """The README's model table."""
    rows = ["| name | input | what |", "|---|---|---|"]
    for s in SPECS.values():
        if s.family in families:
            order = [i for i in ("graph", "image", "text", "composition") if i in s.inputs]
            rows.append(f"| `{s.name}` | {' + '.join(order)} | {s.summary} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(markdown_table())
