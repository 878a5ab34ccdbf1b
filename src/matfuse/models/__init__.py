"""Model construction: every model is a plain ``nn.Module`` built from typed kwargs.

Which models exist, what they read and which family trains them is written once, in the
torch-free :mod:`matfuse.registry`. Here: ``build_model(name, **kwargs)`` constructs one;
``model.to_config()`` gives ``{"name": ..., **kwargs}`` (primitives only, safe for
``torch.load(weights_only=True)`` checkpoints) and ``model_from_config(cfg)`` rebuilds it.
``model_kwargs`` maps the workflow's shared :class:`~matfuse.config.ModelHyper` /
:class:`~matfuse.config.GraphConfig` onto a crystal-family model's own settings.

Every crystal-family model takes a PyTorch Geometric ``Batch`` and returns ``(B,)`` predictions.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from matfuse.config import GraphConfig, ModelHyper, TextEncoderSettings
from matfuse.models.alignn import ALIGNN, ALIGNNConfig
from matfuse.models.cgcnn import CGCNN, CGCNNConfig
from matfuse.models.crysmmnet import CrysMMNet
from matfuse.models.matmmfuse import MatMMFuse
from matfuse.models.text_mlp import TextMLP
from matfuse.registry import SPECS, spec

__all__ = [
    "ALIGNN",
    "CGCNN",
    "CrysMMNet",
    "MatMMFuse",
    "TextMLP",
    "build_model",
    "model_from_config",
    "model_kwargs",
    "model_inputs",
]


def model_inputs(name: str) -> frozenset[str]:
    """Inputs a registered model needs (subset of {"graph", "text", "image", "composition"})."""
    return spec(name).inputs


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Construct a registered model; unknown names or settings raise ``ValueError``.

    A class registered under several names (``cgcnn`` and ``cgcnn_paper``: one architecture, two
    training recipes) records the name it was built under, so its checkpoint says which it is.
    """
    model = spec(name).build()(**kwargs)
    if isinstance(getattr(model, "name", None), str) and model.name != name:
        model.name = name
    return model


def _drop(config: dict[str, Any], dotted: str) -> None:
    *path, key = dotted.split(".")
    node: Any = config
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and key in node:
        node[key] = None


def model_from_config(config: dict[str, Any], for_loading: bool = False) -> nn.Module:
    """Rebuild a model from ``model.to_config()`` output.

    ``for_loading``: the weights come from a checkpoint's state dict, so constructor keys that
    name pretrained-weight files (e.g. ImageNet weights of ``ecd_inception``) are dropped.
    """
    config = copy.deepcopy(dict(config))
    name = config.pop("name")
    if for_loading:
        for key in spec(name).weight_files:
            _drop(config, key)
    return build_model(name, **config)


def model_kwargs(
    name: str, hyper: ModelHyper, graph: GraphConfig, text_dim: int | None = None,
    text_encoder: TextEncoderSettings | None = None,
) -> dict[str, Any]:
    """Constructor kwargs of model ``name`` from the workflow's shared hyper-parameters.

    CGCNN keeps the reference head without dropout; ``hyper.dropout`` applies to the text MLP,
    the fusion attention, the CrysMMNet projection heads and the fine-tuned text head.
    ``text_encoder``: the encoder a token model fine-tunes (its weights are read at construction).
    ALIGNN (``alignn`` and the backbone of ``crysmmnet_alignn``) keeps the reference's widths and
    depths (its own :class:`~matfuse.models.alignn.ALIGNNConfig` defaults; ``hyper``'s CGCNN widths
    do not apply), its distance RBFs spanning ``0..graph.radius``.
    """
    cg = CGCNNConfig(
        atom_fea_len=hyper.atom_fea_len,
        atom_features=hyper.atom_features,
        n_conv=hyper.n_conv,
        h_fea_len=hyper.h_fea_len,
        radius=graph.radius,
        gaussian_step=graph.gaussian_step,
    ).model_dump()
    needs_text = "text" in model_inputs(name)
    if needs_text and not text_dim:
        raise ValueError(f"model {name!r} needs a text embedding width (text_dim)")
    text: dict[str, Any] = {}
    if "tokens" in model_inputs(name):
        if text_encoder is None:
            raise ValueError(f"model {name!r} fine-tunes a text encoder: say which (text_encoder)")
        text = {"encoder": text_encoder.model, "weights": text_encoder.model, "max_length": text_encoder.max_length,
                "pooling": hyper.text_pooling or text_encoder.pooling}
    if name in ("cgcnn", "cgcnn_paper"):  # cgcnn_paper: its recipe's hyper-parameters are in `hyper`
        return cg
    if name == "text":
        return {"text_dim": text_dim, "hidden": hyper.h_fea_len, "dropout": hyper.dropout}
    if name == "text_finetune":
        return {"text": text, "dropout": hyper.dropout}
    if name == "matmmfuse":
        from matfuse.models.mdl_cgcnn import MDLCGCNNConfig

        g = cg if hyper.backbone == "cgcnn" else MDLCGCNNConfig(radius=graph.radius).model_dump()
        return {"text": text, "backbone": hyper.backbone, "graph": g, "fusion_dim": hyper.fusion_dim,
                "heads": hyper.fusion_heads, "attn_dropout": hyper.attn_dropout}
    if name in ("matmmfuse_frozen", "matmmfuse_tokens"):
        return {
            "text_dim": text_dim,
            "graph": cg,
            "fusion_dim": hyper.fusion_dim,
            "heads": hyper.fusion_heads,
            "dropout": hyper.dropout,
        }
    if name == "crysmmnet":
        return {"text_dim": text_dim, "graph": cg, "proj_dim": hyper.proj_dim, "dropout": hyper.dropout}
    al = ALIGNNConfig(radius=graph.radius).model_dump()
    if name == "alignn":
        return al
    if name == "crysmmnet_alignn":
        return {"text_dim": text_dim, "backbone": "alignn", "graph": al, "activation": "relu",
                "proj_dim": hyper.proj_dim, "dropout": hyper.dropout}
    raise ValueError(f"no kwargs mapping for model {name!r}; build it with build_model directly")
