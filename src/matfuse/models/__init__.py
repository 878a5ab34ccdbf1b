"""Model registry: every model is a plain ``nn.Module`` built from typed kwargs.

``build_model(name, **kwargs)`` constructs one; ``model.to_config()`` gives
``{"name": ..., **kwargs}`` (primitives only, safe for ``torch.load(weights_only=True)``
checkpoints) and ``model_from_config(cfg)`` rebuilds it.  ``model_kwargs`` maps the workflow's
shared :class:`~matfuse.config.ModelHyper` / :class:`~matfuse.config.GraphConfig` onto each
model's own settings.  Other model families register with :func:`register_model`.

Every model takes a PyTorch Geometric ``Batch`` and returns ``(B,)`` predictions; it
declares ``uses_graph`` / ``uses_text`` so the data loader knows what to attach.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from matfuse.config import GraphConfig, ModelHyper
from matfuse.models.cgcnn import CGCNN, CGCNNConfig
from matfuse.models.crysmmnet import CrysMMNet
from matfuse.models.matmmfuse import MatMMFuse, matmmfuse_published, matmmfuse_tokens
from matfuse.models.text_mlp import TextMLP

MODELS: dict[str, Callable[..., nn.Module]] = {
    "cgcnn": CGCNN,
    "text": TextMLP,
    "matmmfuse": matmmfuse_published,
    "matmmfuse_tokens": matmmfuse_tokens,
    "crysmmnet": CrysMMNet,
}

#: What each model needs as input: {"graph", "text"} subsets.  Used by data loading.
MODEL_INPUTS: dict[str, frozenset[str]] = {
    "cgcnn": frozenset({"graph"}),
    "text": frozenset({"text"}),
    "matmmfuse": frozenset({"graph", "text"}),
    "matmmfuse_tokens": frozenset({"graph", "text"}),
    "crysmmnet": frozenset({"graph", "text"}),
}

__all__ = [
    "CGCNN",
    "CrysMMNet",
    "MatMMFuse",
    "TextMLP",
    "MODELS",
    "build_model",
    "model_from_config",
    "model_kwargs",
    "model_inputs",
    "register_model",
]


#: Optional per-model mapping (hyper, graph, text_dim) -> kwargs for registered models.
KWARGS_FNS: dict[str, Callable[[ModelHyper, GraphConfig, int | None], dict[str, Any]]] = {}


def register_model(
    name: str,
    factory: Callable[..., nn.Module],
    inputs: set[str] | frozenset[str],
    kwargs_fn: Callable[[ModelHyper, GraphConfig, int | None], dict[str, Any]] | None = None,
) -> None:
    """Add a model family (e.g. the charge-density models) to the registry.

    ``inputs`` names what its batches need ({"graph", "text"}; others are the caller's
    business); ``kwargs_fn`` lets :func:`model_kwargs` build it from the shared hyper-parameters.
    """
    MODELS[name] = factory
    MODEL_INPUTS[name] = frozenset(inputs)
    if kwargs_fn is not None:
        KWARGS_FNS[name] = kwargs_fn


def model_inputs(name: str) -> frozenset[str]:
    """Inputs a registered model needs (subset of {"graph", "text"})."""
    if name not in MODEL_INPUTS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODEL_INPUTS[name]


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Construct a registered model; unknown names or settings raise ``ValueError``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from ``model.to_config()`` output."""
    config = dict(config)
    name = config.pop("name")
    return build_model(name, **config)


def model_kwargs(name: str, hyper: ModelHyper, graph: GraphConfig, text_dim: int | None = None) -> dict[str, Any]:
    """Constructor kwargs of model ``name`` from the workflow's shared hyper-parameters.

    CGCNN keeps the reference head without dropout; ``hyper.dropout`` applies to the text MLP,
    the fusion attention and the CrysMMNet projection heads.
    """
    cg = CGCNNConfig(
        atom_fea_len=hyper.atom_fea_len,
        n_conv=hyper.n_conv,
        h_fea_len=hyper.h_fea_len,
        radius=graph.radius,
        gaussian_step=graph.gaussian_step,
    ).model_dump()
    needs_text = "text" in model_inputs(name)
    if needs_text and not text_dim:
        raise ValueError(f"model {name!r} needs a text embedding width (text_dim)")
    if name == "cgcnn":
        return cg
    if name == "text":
        return {"text_dim": text_dim, "hidden": hyper.h_fea_len, "dropout": hyper.dropout}
    if name in ("matmmfuse", "matmmfuse_tokens"):
        return {
            "text_dim": text_dim,
            "graph": cg,
            "fusion_dim": hyper.fusion_dim,
            "heads": hyper.fusion_heads,
            "dropout": hyper.dropout,
        }
    if name == "crysmmnet":
        return {"text_dim": text_dim, "graph": cg, "proj_dim": hyper.proj_dim, "dropout": hyper.dropout}
    if name in KWARGS_FNS:
        return KWARGS_FNS[name](hyper, graph, text_dim)
    raise ValueError(f"no kwargs mapping for model {name!r}; build it with build_model directly")
